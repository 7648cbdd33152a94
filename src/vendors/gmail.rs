//! Gmail (`gmail.googleapis.com`): the recipients of an outgoing message, from the JSON
//! `raw` forms (`"body": "gmail.message"`) and the media and multipart uploads
//! (`"body": "gmail.upload"`), for `context.body.email`.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::vendor::Vendor;
use crate::intent::body::{BodyInput, BodyReader, BodyReading};
use crate::intent::extract::budget::Budget;
use crate::intent::extract::error::{BodyError, ambiguous, invalid, shown};
use crate::intent::extract::query::query_once;
use crate::intent::extract::{address, json, mime};

/// Gmail, as AgentGate knows it.
pub static VENDOR: Vendor = Vendor {
    service: "gmail",
    catalog: &[(
        "gmail.json",
        include_str!("../../config/services/gmail.json"),
    )],
    origin: "https://gmail.googleapis.com",
    siblings: &[],
    meaning_headers: &[],
    bodies: &[MESSAGE, UPLOAD],
    names: None,
    mcp_arguments: Some(mcp_arguments),
};

/// A Gmail MCP tool's recipients (`to`, `cc`, `bcc`: an address, a comma-separated list or a
/// list) become `context.body.email` as the REST path records them, so the same rules on
/// recipients and their domains apply.
fn mcp_arguments(args: &Map<String, Value>) -> Result<super::vendor::McpReading, String> {
    let mut reading = super::vendor::McpReading::default();
    let field = |key: &str| -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        match args.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => out.extend(s.split(',').map(str::to_owned)),
            Some(Value::Array(list)) => {
                for a in list {
                    out.push(
                        a.as_str()
                            .ok_or_else(|| format!("Gmail {key} must list addresses as strings"))?
                            .to_owned(),
                    );
                }
            }
            Some(_) => return Err(format!("Gmail {key} must be an address or a list")),
        }
        Ok(out
            .into_iter()
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .collect())
    };
    let email = Email {
        to: field("to")?,
        cc: field("cc")?,
        bcc: field("bcc")?,
        attachments: None,
    };
    if !(email.to.is_empty() && email.cc.is_empty() && email.bcc.is_empty()) {
        reading.body.insert("email".into(), email.to_json());
    }
    Ok(reading)
}

/// Gmail JSON carrying a base64url RFC 5322 message in `raw`.
const MESSAGE: BodyReader = BodyReader {
    name: "gmail.message",
    read: read_message,
    guards_unknown_paths: false,
};

/// Gmail media upload: the message itself, or multipart/related with it.
const UPLOAD: BodyReader = BodyReader {
    name: "gmail.upload",
    read: read_upload,
    guards_unknown_paths: false,
};

fn read_message(input: &BodyInput<'_>) -> Result<BodyReading, BodyError> {
    let mut reading = BodyReading::default();
    if let Some(email) = gmail_json(input.body.bytes, input.body.truncated)? {
        reading.selected.insert("email".into(), email.to_json());
    }
    Ok(reading)
}

fn read_upload(input: &BodyInput<'_>) -> Result<BodyReading, BodyError> {
    // One `uploadType`, spelt exactly so, or the request is refused.
    let upload_type = gmail_upload_type(input.query)?;
    let email = gmail_upload(
        input.content_type,
        upload_type.as_deref(),
        input.body.bytes,
        input.body.truncated,
    )?;
    let mut reading = BodyReading::default();
    reading.selected.insert("email".into(), email.to_json());
    Ok(reading)
}

/// Recipients and attachments of an outgoing message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    /// Every address of every `To` header, lowercased.
    pub to: Vec<String>,
    /// Every address of every `Cc` header, lowercased.
    pub cc: Vec<String>,
    /// Every address of every `Bcc` header, lowercased.
    pub bcc: Vec<String>,
    /// `None` when the body was cut off before the end of the message.
    pub attachments: Option<usize>,
}

impl Email {
    /// `context.body.email`.
    pub fn to_json(&self) -> Value {
        let mut all: Vec<&String> = self.to.iter().chain(&self.cc).chain(&self.bcc).collect();
        all.sort();
        all.dedup();
        let mut domains: Vec<&str> = all
            .iter()
            .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d))
            .collect();
        domains.sort_unstable();
        domains.dedup();
        json!({
            "to": self.to, "cc": self.cc, "bcc": self.bcc,
            "recipients": all, "domains": domains,
            "recipient_count": all.len(),
            "attachment_count": self.attachments,
        })
    }
}

/// Gmail's JSON forms: `{"raw": …}` (messages) or `{"message": {"raw": …}}` (drafts).
/// `None` for a body that names a stored draft by `id` and carries no message
/// (`drafts.send`): its recipients are not in the request.
///
/// A body cut off at the inspection bound is refused: whatever follows the cut (a second
/// `"raw"`, which some JSON parsers take over the first) cannot be seen. Large messages go
/// through the media upload, whose message headers come first.
pub fn gmail_json(body: &[u8], truncated: bool) -> Result<Option<Email>, BodyError> {
    if truncated {
        return Err(ambiguous(
            "the Gmail JSON body is larger than AgentGate inspects (intent.max_body), and a second \"raw\" could follow unseen; send large messages with /upload/…?uploadType=media",
        ));
    }
    let v = json::parse(body, "the Gmail request body")?;
    let top = v.get("raw");
    let nested = v.get("message").and_then(|m| m.get("raw"));
    let raw = match (top, nested) {
        (Some(_), Some(_)) => {
            return Err(ambiguous(
                "the Gmail request body has both \"raw\" and \"message.raw\"; send one message",
            ));
        }
        (Some(r), None) | (None, Some(r)) => r,
        (None, None) if v.get("id").is_some_and(Value::is_string) => return Ok(None),
        (None, None) => return Err(invalid("Gmail request body has no \"raw\" message")),
    };
    let Value::String(raw) = raw else {
        return Err(invalid("Gmail \"raw\" is not a string"));
    };
    let message = decode_base64url(raw.as_bytes())?;
    rfc822(&message, false).map(Some)
}

/// Reads an RFC 5322 message's recipients: every To, Cc and Bcc header (not only the first),
/// each a strictly read address list. `truncated`: the message goes on beyond `message`,
/// whose header section must still end within it.
pub fn rfc822(message: &[u8], truncated: bool) -> Result<Email, BodyError> {
    rfc822_in(message, truncated, &mut Budget::default())
}

fn rfc822_in(message: &[u8], truncated: bool, budget: &mut Budget) -> Result<Email, BodyError> {
    let head = mime::head(message, None, "the e-mail message", budget)?;
    if truncated && !head.complete {
        return Err(ambiguous(
            "the e-mail message's headers go on beyond what AgentGate inspects (intent.max_body), so not every recipient can be seen",
        ));
    }
    let mut email = Email::default();
    for field in &head.fields {
        let list = if field.is("To") {
            &mut email.to
        } else if field.is("Cc") {
            &mut email.cc
        } else if field.is("Bcc") {
            &mut email.bcc
        } else if ["Resent-To", "Resent-Cc", "Resent-Bcc"]
            .iter()
            .any(|n| field.is(n))
        {
            // Gmail sends to To, Cc and Bcc; a reader following RFC 5322 §3.6.6 takes the
            // Resent-* fields as the destinations of a resent message instead. Rather than
            // pick one reading, such a message is refused (sending new mail never needs one).
            return Err(ambiguous(format!(
                "the e-mail message has a {} header, whose recipients readers treat differently; remove it",
                field.name
            )));
        } else {
            continue;
        };
        list.extend(address::list(&field.value()?, field.name, budget)?);
    }
    email.attachments = if truncated {
        None
    } else {
        Some(mime::attachments(&head, 0, budget)?)
    };
    if email.to.is_empty() && email.cc.is_empty() && email.bcc.is_empty() && truncated {
        return Err(invalid(
            "the e-mail message is too large to inspect and no recipient was found in its first part",
        ));
    }
    Ok(email)
}

/// The `uploadType` of a Gmail upload, from the query (given once, spelt exactly).
pub fn gmail_upload_type(query: Option<&str>) -> Result<Option<String>, BodyError> {
    query_once(query, "uploadType")
}

/// A Gmail media upload: the message itself (`media`), or multipart/related of exactly two
/// parts, JSON metadata then the message (`multipart`).
pub fn gmail_upload(
    content_type: Option<&str>,
    upload_type: Option<&str>,
    body: &[u8],
    truncated: bool,
) -> Result<Email, BodyError> {
    match upload_type {
        Some("media") => rfc822(body, truncated),
        Some("multipart") => {
            if truncated {
                return Err(ambiguous(
                    "a multipart Gmail upload larger than AgentGate inspects (intent.max_body) cannot be checked to hold only metadata and one message; send large messages with uploadType=media",
                ));
            }
            let mut budget = Budget::default();
            let ct =
                content_type.ok_or_else(|| invalid("multipart upload without Content-Type"))?;
            let ct = mime::params(ct, "the upload's Content-Type", false)?;
            if ct.main != "multipart/related" {
                return Err(invalid(format!(
                    "a multipart Gmail upload must be multipart/related, not {}",
                    shown(&ct.main)
                )));
            }
            let boundary = ct
                .get("boundary")
                .ok_or_else(|| invalid("the multipart upload's Content-Type has no boundary"))?;
            let (parts, eol) =
                mime::multipart(boundary, body, false, "the multipart upload", &mut budget)?;
            let [meta, message] = parts.as_slice() else {
                return Err(ambiguous(format!(
                    "a multipart Gmail upload holds exactly two parts, JSON metadata then the message; this one has {}",
                    parts.len()
                )));
            };
            let what = "the upload's metadata part";
            let meta = upload_part(meta, eol, what, "application/json", &mut budget)?;
            let meta = json::parse(meta.body, what)?;
            if !meta.is_object() {
                return Err(invalid(format!("{what} is not a JSON object")));
            }
            if meta.get("raw").is_some() || meta.get("message").and_then(|m| m.get("raw")).is_some()
            {
                return Err(ambiguous(
                    "the upload's metadata part carries a \"raw\" message besides the message part; send the message once",
                ));
            }
            let what = "the upload's message part";
            let message = upload_part(message, eol, what, "message/rfc822", &mut budget)?;
            rfc822_in(message.body, false, &mut budget)
        }
        Some("resumable") => Err(invalid(
            "resumable Gmail uploads cannot be inspected; send the message with uploadType=media or multipart, or as JSON \"raw\"",
        )),
        _ => Err(invalid("Gmail upload needs uploadType=media or multipart")),
    }
}

/// One part of a multipart upload: complete headers, one Content-Type of the expected type
/// (so never a nested multipart), no transfer encoding.
fn upload_part<'a>(
    raw: &'a [u8],
    eol: mime::Eol,
    what: &str,
    expected: &str,
    budget: &mut Budget,
) -> Result<mime::Head<'a>, BodyError> {
    let head = mime::head(raw, Some(eol), what, budget)?;
    if !head.complete {
        return Err(ambiguous(format!(
            "{what} has no blank line after its headers"
        )));
    }
    let ct = head
        .content_type(what, false)?
        .ok_or_else(|| ambiguous(format!("{what} has no Content-Type")))?;
    if ct.main != expected {
        return Err(ambiguous(format!(
            "{what} is {}; a multipart Gmail upload holds {expected} there",
            shown(&ct.main)
        )));
    }
    head.identity_encoding(what)?;
    Ok(head)
}

fn decode_base64url(raw: &[u8]) -> Result<Vec<u8>, BodyError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let url = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let std = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    url.decode(raw)
        .or_else(|_| std.decode(raw))
        .map_err(|_| invalid("Gmail \"raw\" is not base64url"))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
