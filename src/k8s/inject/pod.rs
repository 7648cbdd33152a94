//! Inject into and uninject from one pod template (`metadata` + `spec`).

use yaml_serde::{Mapping, Sequence, Value};

use super::error::InjectError;
use super::options::{CREATED, INJECTED, KEPT, Mode, OPT_OUT, PROXY_UID};
use super::template::{self, CA_DIR, CA_VOLUME, CONTAINERS, Prepared, VOLUMES};

/// Whether `metadata` carries the opt-out annotation.
pub(super) fn opted_out(metadata: Option<&Value>) -> bool {
    match annotation(metadata, OPT_OUT) {
        Some(Value::String(s)) => s == "false",
        Some(Value::Bool(b)) => !b,
        _ => false,
    }
}

/// Injects unless opted out or hostNetwork; an injected template is re-injected, and left
/// alone when that gives the same value. True if changed.
pub(super) fn inject(
    tpl: &mut Mapping,
    workload_opted_out: bool,
    p: &Prepared,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<bool, InjectError> {
    if workload_opted_out || opted_out(tpl.get("metadata")) {
        return Ok(false);
    }
    let spec = tpl.get("spec");
    if spec
        .and_then(|s| s.get("hostNetwork"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        warnings.push(format!(
            "{at}: skipped: hostNetwork pod (the sidecar would listen, and the iptables rules \
             apply, on the node); set {OPT_OUT}: \"false\" on it to silence this"
        ));
        return Ok(false);
    }
    if annotation(tpl.get("metadata"), INJECTED).is_some() {
        let mut fresh = tpl.clone();
        uninject(&mut fresh, at)?;
        add(&mut fresh, p, at)?;
        if fresh == *tpl {
            return Ok(false);
        }
        *tpl = fresh;
        return Ok(true);
    }
    add(tpl, p, at)?;
    Ok(true)
}

/// Removes what inject added if the template is marked injected. True if changed.
pub(super) fn uninject(tpl: &mut Mapping, at: &str) -> Result<bool, InjectError> {
    let Some(marker) = annotation(tpl.get("metadata"), INJECTED) else {
        return Ok(false);
    };
    let mode = marker
        .as_str()
        .and_then(Mode::parse)
        .ok_or_else(|| InjectError::BadMarker {
            at: at.to_owned(),
            value: format!("{marker:?}"),
        })?;
    let created = list(annotation(tpl.get("metadata"), CREATED));
    let kept = list(annotation(tpl.get("metadata"), KEPT));
    let env = template::app_env(mode);
    if let Some(spec) = tpl.get_mut("spec").and_then(Value::as_mapping_mut) {
        retain(spec, "initContainers", |c| !CONTAINERS.contains(&name(c)));
        restore(spec, "initContainers", "initContainers", &created);
        retain(spec, "volumes", |v| !VOLUMES.contains(&name(v)));
        restore(spec, "volumes", "volumes", &created);
        let containers = spec.get_mut("containers").and_then(Value::as_sequence_mut);
        for c in containers
            .into_iter()
            .flatten()
            .filter_map(Value::as_mapping_mut)
        {
            let cname = name_of(c).to_owned();
            retain(c, "env", |e| {
                let ours = env.iter().any(|(k, v)| is_env(e, k, v));
                !ours || kept.contains(&format!("containers[{cname}].env[{}]", name(e)))
            });
            restore(c, "env", &format!("containers[{cname}].env"), &created);
            retain(c, "volumeMounts", |m| !is_ca_mount(m));
            restore(
                c,
                "volumeMounts",
                &format!("containers[{cname}].volumeMounts"),
                &created,
            );
        }
    }
    if let Some(meta) = tpl.get_mut("metadata").and_then(Value::as_mapping_mut) {
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) {
            for key in [INJECTED, CREATED, KEPT] {
                ann.shift_remove(key);
            }
        }
        restore(meta, "annotations", "metadata.annotations", &created);
    }
    restore(tpl, "metadata", "metadata", &created);
    Ok(true)
}

/// Adds everything to a template not marked injected, after the refusals.
fn add(tpl: &mut Mapping, p: &Prepared, at: &str) -> Result<(), InjectError> {
    check(tpl, p, at)?;
    let mut created = Vec::new();
    let mut kept = Vec::new();
    let spec = mapping_mut(tpl, "spec", at)?;
    let init = entry(spec, "initContainers", "initContainers", &mut created, at)?;
    init.splice(0..0, p.init_containers.iter().cloned());
    entry(spec, "volumes", "volumes", &mut created, at)?.extend(p.volumes.iter().cloned());
    for c in containers_mut(spec, at)? {
        let cname = name_of(c).to_owned();
        let env = entry(
            c,
            "env",
            &format!("containers[{cname}].env"),
            &mut created,
            at,
        )?;
        for (k, v) in &p.env {
            if env.iter().any(|e| is_env(e, k, v)) {
                kept.push(format!("containers[{cname}].env[{k}]"));
            } else {
                env.push(template::env_var(k, v));
            }
        }
        let label = format!("containers[{cname}].volumeMounts");
        entry(c, "volumeMounts", &label, &mut created, at)?.push(template::ca_mount());
    }
    let meta = map_entry(tpl, "metadata", "metadata", &mut created, at)?;
    let ann = map_entry(
        meta,
        "annotations",
        "metadata.annotations",
        &mut created,
        at,
    )?;
    ann.insert(s(INJECTED), s(p.mode.as_str()));
    if !created.is_empty() {
        ann.insert(s(CREATED), s(&created.join(",")));
    }
    if !kept.is_empty() {
        ann.insert(s(KEPT), s(&kept.join(",")));
    }
    Ok(())
}

/// The refusals: taken names, conflicting variables or mounts, the proxy's UID.
fn check(tpl: &Mapping, p: &Prepared, at: &str) -> Result<(), InjectError> {
    let spec = tpl
        .get("spec")
        .and_then(Value::as_mapping)
        .ok_or_else(|| shape(at, "spec", "a mapping"))?;
    let seq = |key: &str| {
        spec.get(key)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
    };
    let taken = |what, name: &str| InjectError::NameTaken {
        at: at.to_owned(),
        what,
        name: name.to_owned(),
    };
    for c in seq("containers").chain(seq("initContainers")) {
        if CONTAINERS.contains(&name(c)) {
            return Err(taken("container", name(c)));
        }
    }
    if let Some(v) = seq("volumes").find(|v| VOLUMES.contains(&name(v))) {
        return Err(taken("volume", name(v)));
    }
    let pod_uid = uid(spec.get("securityContext"));
    for c in seq("containers") {
        let cname = name(c).to_owned();
        for e in c
            .get("env")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let Some((_, want)) = p.env.iter().find(|(k, _)| *k == name(e)) else {
                continue;
            };
            if !is_env(e, name(e), want) {
                let have = match e.get("value") {
                    Some(Value::String(v)) => format!("{v:?}"),
                    _ => "something else (valueFrom or a non-string)".to_owned(),
                };
                return Err(InjectError::EnvConflict {
                    at: at.to_owned(),
                    container: cname,
                    var: name(e).to_owned(),
                    have,
                    want: (*want).to_owned(),
                });
            }
        }
        let mounts = c.get("volumeMounts").and_then(Value::as_sequence);
        if let Some(m) = mounts
            .into_iter()
            .flatten()
            .find(|m| mount_path(m) == CA_DIR)
        {
            return Err(InjectError::MountConflict {
                at: at.to_owned(),
                container: cname,
                volume: name(m).to_owned(),
            });
        }
        if p.mode == Mode::Enforced {
            let (uid, source_of) = match uid(c.get("securityContext")) {
                Some(u) => (Some(u), "its securityContext"),
                None => (pod_uid, "the pod's securityContext"),
            };
            if uid == Some(PROXY_UID) {
                return Err(InjectError::ProxyUid {
                    at: at.to_owned(),
                    container: cname,
                    source_of,
                });
            }
        }
    }
    Ok(())
}

fn annotation<'a>(metadata: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    metadata?.get("annotations")?.get(key)
}

fn list(v: Option<&Value>) -> Vec<String> {
    let s = v.and_then(Value::as_str).unwrap_or("");
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn uid(security_context: Option<&Value>) -> Option<i64> {
    security_context?.get("runAsUser")?.as_i64()
}

fn name(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

fn name_of(m: &Mapping) -> &str {
    m.get("name").and_then(Value::as_str).unwrap_or("")
}

fn mount_path(m: &Value) -> &str {
    let p = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
    if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    }
}

fn is_env(e: &Value, name_: &str, value: &str) -> bool {
    let Some(m) = e.as_mapping() else {
        return false;
    };
    name(e) == name_
        && m.get("value").and_then(Value::as_str) == Some(value)
        && !m.contains_key("valueFrom")
}

fn is_ca_mount(m: &Value) -> bool {
    name(m) == CA_VOLUME && mount_path(m) == CA_DIR
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn shape(at: &str, what: &str, expected: &'static str) -> InjectError {
    InjectError::Shape {
        at: at.to_owned(),
        what: what.to_owned(),
        expected,
    }
}

fn mapping_mut<'a>(
    m: &'a mut Mapping,
    key: &str,
    at: &str,
) -> Result<&'a mut Mapping, InjectError> {
    m.get_mut(key)
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| shape(at, key, "a mapping"))
}

fn containers_mut<'a>(
    spec: &'a mut Mapping,
    at: &str,
) -> Result<impl Iterator<Item = &'a mut Mapping>, InjectError> {
    let seq = spec
        .get_mut("containers")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| shape(at, "spec.containers", "a list of containers"))?;
    Ok(seq.iter_mut().filter_map(Value::as_mapping_mut))
}

/// The list at `m[key]`, created (and recorded as `label`, `label:null` if it was null) when
/// absent.
fn entry<'a>(
    m: &'a mut Mapping,
    key: &str,
    label: &str,
    created: &mut Vec<String>,
    at: &str,
) -> Result<&'a mut Sequence, InjectError> {
    created_entry(m, key, label, created, Value::Sequence(Vec::new()))
        .as_sequence_mut()
        .ok_or_else(|| shape(at, key, "a list"))
}

/// Like [`entry`], for a mapping.
fn map_entry<'a>(
    m: &'a mut Mapping,
    key: &str,
    label: &str,
    created: &mut Vec<String>,
    at: &str,
) -> Result<&'a mut Mapping, InjectError> {
    created_entry(m, key, label, created, Value::Mapping(Mapping::new()))
        .as_mapping_mut()
        .ok_or_else(|| shape(at, key, "a mapping"))
}

/// `m[key]`, set to `empty` (and recorded in `created`) when absent or null.
fn created_entry<'a>(
    m: &'a mut Mapping,
    key: &str,
    label: &str,
    created: &mut Vec<String>,
    empty: Value,
) -> &'a mut Value {
    match m.get(key) {
        None => created.push(label.to_owned()),
        Some(Value::Null) => created.push(format!("{label}:null")),
        _ => {}
    }
    let v = m.entry(s(key)).or_insert(Value::Null);
    if v.is_null() {
        *v = empty;
    }
    v
}

fn retain(m: &mut Mapping, key: &str, keep: impl FnMut(&Value) -> bool) {
    let mut keep = keep;
    if let Some(seq) = m.get_mut(key).and_then(Value::as_sequence_mut) {
        seq.retain(|v| keep(v));
    }
}

/// Puts back what inject found at `m[key]` (nothing, or null) if it created it and it is
/// empty again.
fn restore(m: &mut Mapping, key: &str, label: &str, created: &[String]) {
    let empty = match m.get(key) {
        Some(Value::Sequence(s)) => s.is_empty(),
        Some(Value::Mapping(mm)) => mm.is_empty(),
        _ => false,
    };
    if !empty {
        return;
    }
    if created.iter().any(|c| c == label) {
        m.shift_remove(key);
    } else if created.iter().any(|c| *c == format!("{label}:null")) {
        m.insert(s(key), Value::Null);
    }
}
