//! Slack (`slack.com/api/<method>`): the channels a Web API call names, from the query and
//! a form, JSON or multipart body; they become the resource (`slack.channel`). A `token`
//! argument is refused on every method, known or not: credentials are AgentGate's job.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::vendor::Vendor;
use crate::intent::body::{BodyInput, BodyReader, BodyReading};
use crate::intent::extract::budget::Budget;
use crate::intent::extract::error::{BodyError, ambiguous, invalid, shown};
use crate::intent::extract::{json, mime};

/// Slack, as AgentGate knows it.
pub static VENDOR: Vendor = Vendor {
    service: "slack",
    catalog: &[(
        "slack.json",
        include_str!("../../config/services/slack.json"),
    )],
    origin: "https://slack.com",
    siblings: &[],
    meaning_headers: &[],
    bodies: &[ARGUMENTS],
    names: None,
    mcp_arguments: Some(mcp_arguments),
};

/// A Slack MCP tool's channel (`channel`, `channel_id` or `channel_ids`) is the resource its
/// Web API method would name.
fn mcp_arguments(
    args: &serde_json::Map<String, serde_json::Value>,
) -> Result<super::vendor::McpReading, String> {
    let mut reading = super::vendor::McpReading::default();
    let mut channels: Vec<String> = Vec::new();
    for key in ["channel", "channel_id", "channel_ids", "channels"] {
        match args.get(key) {
            Some(Value::String(s)) => channels.extend(s.split(',').map(|c| c.trim().to_owned())),
            Some(Value::Array(list)) => {
                for c in list {
                    let c = c
                        .as_str()
                        .ok_or_else(|| format!("Slack {key} must list channel ids as strings"))?;
                    channels.push(c.trim().to_owned());
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(format!("Slack {key} must be a string or a list")),
        }
    }
    channels.retain(|c| !c.is_empty());
    channels.sort();
    channels.dedup();
    if channels.len() > SLACK_MAX_CHANNELS {
        return Err(format!(
            "more than {SLACK_MAX_CHANNELS} Slack channels in one call"
        ));
    }
    if !channels.is_empty() {
        reading.resource = Some(("slack.channel", channels.join(","), Default::default()));
    }
    Ok(reading)
}

/// Slack Web API arguments (query, form or JSON): `channel`, and no `token`.
const ARGUMENTS: BodyReader = BodyReader {
    name: "slack",
    read: read_arguments,
    guards_unknown_paths: true,
};

fn read_arguments(input: &BodyInput<'_>) -> Result<BodyReading, BodyError> {
    // A body cut off at the bound is judged by its query alone.
    let bytes = if input.body.truncated {
        &[][..]
    } else {
        input.body.bytes
    };
    let args = slack(input.query, input.content_type, bytes)?;
    let mut reading = BodyReading::default();
    if !args.channels.is_empty() {
        reading.resource = Some((Arc::from("slack.channel"), args.channels.join(",")));
        if let [one] = args.channels.as_slice() {
            reading
                .selected
                .insert("channel".into(), one.as_str().into());
        }
        reading
            .selected
            .insert("channels".into(), args.channels.into());
    }
    Ok(reading)
}

/// Slack arguments that matter for intent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackArgs {
    /// Channels named by `channel`, `channel_id` or `channels` (comma-separated), each once,
    /// in order of first mention.
    pub channels: Vec<String>,
}

const SLACK_CHANNEL_KEYS: [&str; 3] = ["channel", "channel_id", "channels"];

/// Most channels one Slack request may name; no Web API method needs nearly as many.
pub const SLACK_MAX_CHANNELS: usize = 1000;

/// Reads Slack Web API arguments from the query and the body (form, JSON or multipart).
///
/// Refused as ambiguous: an argument given twice (in one place or in the query and the
/// body), two channel-bearing arguments at once (`channel` and `channel_id`, …), argument
/// names that are not plain `[A-Za-z0-9_]` (lenient parsers trim, fold case, cut at NUL or
/// `[`, or turn spaces and dots into `_`), channel names that are not printable ASCII,
/// duplicate JSON keys, multipart parts without exactly one name, nested or encoded parts.
/// `token` under any of those spellings is refused as a credential.
pub fn slack(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<SlackArgs, BodyError> {
    let mut r = Slack::default();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            r.arg(&k, Some(&v), "query", false)?;
        }
    }
    if body.is_empty() {
        return Ok(r.args);
    }
    let ct = content_type
        .map(|c| mime::params(c, "the Slack request's Content-Type", false))
        .transpose()?;
    match ct.as_ref().map_or("", |c| c.main.as_str()) {
        "application/x-www-form-urlencoded" | "" => {
            for (k, v) in form_urlencoded::parse(body) {
                r.arg(&k, Some(&v), "body", false)?;
            }
        }
        "application/json" => {
            let Value::Object(o) = json::parse(body, "the Slack request body")? else {
                return Err(invalid("Slack JSON body must be an object"));
            };
            for (k, v) in &o {
                let text = match v {
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                };
                if text.is_none() && SLACK_CHANNEL_KEYS.contains(&k.as_str()) {
                    return Err(invalid(format!("Slack argument {k} must be a string")));
                }
                r.arg(k, text, "body", false)?;
            }
        }
        "multipart/form-data" => {
            let boundary = ct
                .as_ref()
                .and_then(|c| c.get("boundary"))
                .ok_or_else(|| invalid("the Slack multipart body has no boundary"))?;
            let what = "a part of the Slack multipart body";
            let (parts, eol) = mime::multipart(
                boundary,
                body,
                false,
                "the Slack multipart body",
                &mut r.budget,
            )?;
            for part in parts {
                let head = mime::head(part, Some(eol), what, &mut r.budget)?;
                if !head.complete {
                    return Err(ambiguous(format!(
                        "{what} has no blank line after its headers"
                    )));
                }
                let disposition = head
                    .single("Content-Disposition", what)?
                    .ok_or_else(|| ambiguous(format!("{what} has no Content-Disposition")))?;
                let d = mime::params(
                    &disposition.value()?,
                    "a Slack part's Content-Disposition",
                    false,
                )?;
                if d.main != "form-data" {
                    return Err(ambiguous(format!(
                        "{what} is {}, not form-data",
                        shown(&d.main)
                    )));
                }
                let name = d
                    .get("name")
                    .ok_or_else(|| ambiguous(format!("{what} has no name")))?;
                if let Some(ct) = head.content_type(what, false)? {
                    if ct.main.starts_with("multipart/") {
                        return Err(ambiguous(format!(
                            "{what} ({}) is itself multipart",
                            shown(name)
                        )));
                    }
                }
                head.identity_encoding(what)?;
                let value = std::str::from_utf8(head.body).ok();
                r.arg(name, value, "body", d.get("filename").is_some())?;
            }
        }
        other => {
            return Err(invalid(format!(
                "Slack request body has an unsupported Content-Type {other}; use JSON or form encoding"
            )));
        }
    }
    Ok(r.args)
}

/// The Slack arguments read so far.
#[derive(Debug, Default)]
struct Slack {
    args: SlackArgs,
    /// Every argument name seen, to refuse a second one.
    names: HashSet<String>,
    /// The channel-bearing argument, once seen.
    channel_key: Option<String>,
    channels: HashSet<String>,
    /// Channels named, duplicates included.
    named: usize,
    budget: Budget,
}

/// What lenient form parsers make of an argument name: PHP cuts it at NUL or `[`, drops
/// leading spaces and turns spaces and dots into `_`; others trim or fold case.
fn slack_reading(name: &str) -> String {
    let cut = name.split(['\0', '[']).next().unwrap_or("");
    cut.trim_matches(|c: char| c.is_whitespace() || c.is_control() || c == '+')
        .chars()
        .map(|c| match c {
            ' ' | '.' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

impl Slack {
    fn arg(
        &mut self,
        name: &str,
        value: Option<&str>,
        place: &'static str,
        file: bool,
    ) -> Result<(), BodyError> {
        self.budget.spend(1, "Slack arguments")?;
        let reading = slack_reading(name);
        if reading == "token" {
            return Err(BodyError::SlackToken(place));
        }
        let plain =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let channel_key = SLACK_CHANNEL_KEYS.contains(&reading.as_str());
        if channel_key && name != reading {
            return Err(ambiguous(format!(
                "the Slack argument name {} in the {place} reads as {reading} to some parsers; send it exactly as {reading}",
                shown(name)
            )));
        }
        if !plain {
            return Err(ambiguous(format!(
                "the Slack argument name {} in the {place} is not a plain name (ASCII letters, digits and _), which parsers read differently",
                shown(name)
            )));
        }
        if !self.names.insert(name.to_owned()) {
            return Err(ambiguous(format!(
                "the Slack argument {name} is given more than once (again in the {place}); send it once"
            )));
        }
        if !channel_key {
            return Ok(());
        }
        if let Some(first) = &self.channel_key {
            return Err(ambiguous(format!(
                "the Slack arguments {first} and {name} both name channels; send one"
            )));
        }
        self.channel_key = Some(name.to_owned());
        if file {
            return Err(ambiguous(format!(
                "the Slack argument {name} is sent as a file, which Slack reads apart from arguments"
            )));
        }
        let value =
            value.ok_or_else(|| invalid(format!("the Slack argument {name} is not UTF-8 text")))?;
        if value.is_empty() {
            return Ok(());
        }
        for channel in value.split(',') {
            self.named += 1;
            if self.named > SLACK_MAX_CHANNELS {
                return Err(BodyError::TooComplex(format!(
                    "the Slack request names more than {SLACK_MAX_CHANNELS} channels; no Slack method takes that many"
                )));
            }
            if channel.is_empty() || !channel.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ambiguous(format!(
                    "the Slack argument {name} names the channel {}, which is not printable ASCII without spaces (Slack channel ids and names are)",
                    shown(channel)
                )));
            }
            if self.channels.insert(channel.to_owned()) {
                self.args.channels.push(channel.to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
