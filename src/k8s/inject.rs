//! `agentgate k8s inject` / `uninject`: add AgentGate to the pods of a manifest stream, or
//! take it out again.
//!
//! The stream is cut into documents at its `---` lines; a document inject does
//! not change is emitted byte for byte, a changed one is re-serialized. Workloads (Pod,
//! Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, also inside a `List`) get,
//! in their pod template: the `agentgate` native sidecar first in initContainers (enforced
//! mode: `agentgate-iptables` before it), its volumes, the agent containers' CA trust (env
//! mode: and proxy) variables and a read-only mount of the CA bundle, and the marker
//! annotation [`INJECTED`]. What inject had to create (a list or map the manifest lacked) is
//! recorded in [`CREATED`] so uninject gives back a manifest equal to the original.

mod error;
mod options;
mod pod;
mod stream;
mod template;

use yaml_serde::Value;

pub use error::InjectError;
pub use options::{CREATED, DEFAULT_IMAGE, INJECTED, KEPT, Mode, OPT_OUT, Options, PROXY_UID};
pub use template::{app_env, init_image_for, sidecar};

/// A rewritten stream and the warnings about workloads left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The whole stream.
    pub text: String,
    /// One line each, for standard error.
    pub warnings: Vec<String>,
}

/// Adds AgentGate to every workload in `input` that is not opted out (see the module doc).
pub fn inject(input: &str, opts: &Options) -> Result<Rewritten, InjectError> {
    let prepared = template::prepare(opts)?;
    rewrite(input, &mut |tpl, opted_out, at, warnings| {
        pod::inject(tpl, opted_out, &prepared, at, warnings)
    })
}

/// Removes exactly what [`inject`] added; documents it did not inject stay byte for byte.
pub fn uninject(input: &str) -> Result<Rewritten, InjectError> {
    rewrite(input, &mut |tpl, _, at, _| pod::uninject(tpl, at))
}

/// Changes one pod template: (template, workload opted out, where, warnings) → changed?
type PodFn<'a> = dyn FnMut(&mut yaml_serde::Mapping, bool, &str, &mut Vec<String>) -> Result<bool, InjectError>
    + 'a;

fn rewrite(input: &str, f: &mut PodFn<'_>) -> Result<Rewritten, InjectError> {
    let mut text = String::with_capacity(input.len() * 2);
    let mut warnings = Vec::new();
    let mut n = 0;
    for doc in stream::split(input) {
        text.push_str(doc.separator);
        let mut value: Value = yaml_serde::from_str(doc.body)
            .map_err(|source| InjectError::Parse { doc: n + 1, source })?;
        if value.is_null() {
            text.push_str(doc.body);
            continue;
        }
        n += 1;
        let at = format!("document {n}");
        if object(&mut value, &at, f, &mut warnings)? {
            let out = stream::reserialize(doc.body, &value)
                .map_err(|source| InjectError::Serialize { at, source })?;
            text.push_str(&out);
        } else {
            text.push_str(doc.body);
        }
    }
    Ok(Rewritten { text, warnings })
}

/// Applies `f` to the pod template of `value` (or of each List item); true if changed.
fn object(
    value: &mut Value,
    at: &str,
    f: &mut PodFn<'_>,
    warnings: &mut Vec<String>,
) -> Result<bool, InjectError> {
    let Some(map) = value.as_mapping_mut() else {
        return Ok(false);
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if kind == "List" || (kind.ends_with("List") && map.contains_key("items")) {
        let mut changed = false;
        if let Some(items) = map.get_mut("items").and_then(Value::as_sequence_mut) {
            for (i, item) in items.iter_mut().enumerate() {
                changed |= object(item, &format!("{at} item {}", i + 1), f, warnings)?;
            }
        }
        return Ok(changed);
    }
    let path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return Ok(false),
    };
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let at = format!("{at} ({kind} {name})");
    let opted_out = pod::opted_out(map.get("metadata"));
    let mut tpl = map;
    for key in path {
        match tpl.get_mut(*key).and_then(Value::as_mapping_mut) {
            Some(next) => tpl = next,
            // Not a usable workload (kubectl would reject it): leave it alone.
            None => return Ok(false),
        }
    }
    f(tpl, opted_out, &at, warnings)
}

#[cfg(test)]
mod tests;
