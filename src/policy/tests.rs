use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::engine::to_rego;
use super::*;

fn sources(rego: &str) -> Sources {
    Sources {
        rego: vec![("p.rego".into(), rego.into())],
        ..Sources::default()
    }
}

fn policy(rego: &str) -> Policy {
    Policy::from_sources(&sources(rego), &PolicyConfig::default()).unwrap()
}

fn input(class: &str) -> Value {
    json!({
        "subject": {"type": "agent", "id": "spiffe://agentgate.local/agent/bot", "properties": {"name": "bot", "owner": null, "tenant": null}},
        "action": {"name": "github.issues.create", "properties": {"method": "POST", "service": "github", "class": class, "known": true}},
        "resource": {"type": "github.repo", "id": "acme/web", "properties": {}},
        "context": {"host": "api.github.com", "path": "/repos/acme/web/issues"},
    })
}

#[test]
fn well_formed_decisions_pass_through() {
    let p = policy(
        r#"package agentgate
decision := {"effect": "escalate", "reasons": ["ask"], "scopes": ["issues:write"], "consent": {"binding_message": "ok"}} if input.action.properties.class == "write"
"#,
    );
    let d = p.evaluate(&input("write"));
    assert_eq!(d.effect, Effect::Escalate);
    assert_eq!(d.reasons, ["ask"]);
    assert_eq!(d.scopes, ["issues:write"]);
    assert_eq!(d.consent.unwrap()["binding_message"], "ok");
    assert_eq!(d.policy_hash.len(), 64);
}

#[test]
fn anything_but_a_decision_denies() {
    let cases = [
        (r#"decision := {"effect": "allow"} if false"#, "undefined"),
        (r#"decision := "allow""#, "not an object"),
        (r#"decision := {"effect": "permit"}"#, "effect must be"),
        (
            r#"decision := {"effect": "allow", "reasons": [1]}"#,
            "reasons must be",
        ),
        (
            r#"decision := {"effect": "allow", "scopes": {"a": 1}}"#,
            "scopes must be",
        ),
        (
            r#"decision := {"effect": "allow", "consent": "yes"}"#,
            "consent must be",
        ),
        (r#"decision := {"effect": "allow", "x": 1 / 0}"#, "failed"),
    ];
    for (rule, why) in cases {
        let p = policy(&format!("package agentgate\n{rule}\n"));
        let d = p.evaluate(&input("read"));
        assert_eq!(d.effect, Effect::Deny, "{rule}");
        assert!(d.reason_line().contains(why), "{rule}: {}", d.reason_line());
    }
}

#[test]
fn a_policy_that_runs_too_long_is_denied() {
    // Nine million iterations that never match: far over the default 100 ms bound in any
    // build, with no memory to speak of. (The bound is process-wide in regorus, so this test
    // uses the default rather than changing it under the tests running beside it.)
    let rego = r#"package agentgate
slow if {
    some x in numbers.range(1, 3000)
    some y in numbers.range(1, 3000)
    x * y == -1
}
decision := {"effect": "allow", "reasons": ["finished"]} if not slow
"#;
    let p = Policy::from_sources(&sources(rego), &PolicyConfig::default()).unwrap();
    let d = p.evaluate(&input("read"));
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.reason_line().contains("time bound"),
        "{}",
        d.reason_line()
    );
}

#[test]
fn no_policy_denies_everything() {
    let p = Policy::from_sources(&Sources::default(), &PolicyConfig::default()).unwrap();
    let d = p.evaluate(&input("read"));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.reason_line().contains("no policy is loaded"));
}

#[test]
fn broken_policies_are_load_errors() {
    let err = Sources::default();
    let _ = err;
    assert!(matches!(
        sources("package agentgate\ndecision := {").compile(Path::new("x")),
        Err(PolicyError::Compile { .. })
    ));
    assert!(matches!(
        sources("package other\nx := 1\n").compile(Path::new("x")),
        Err(PolicyError::NoEntrypoint(_)) | Err(PolicyError::Compile { .. })
    ));
    let mut s = sources("package agentgate\ndecision := {\"effect\": \"allow\"}\n");
    s.data.push(("d.json".into(), "[1, 2]".into()));
    assert!(matches!(
        s.compile(Path::new("x")),
        Err(PolicyError::Data { .. })
    ));
}

#[test]
fn data_files_are_merged_at_the_root() {
    let mut s = sources(
        r#"package agentgate
decision := {"effect": "allow", "reasons": ["internal"]} if "corp.io" in data.settings.internal_domains
"#,
    );
    s.data.push((
        "settings.json".into(),
        r#"{"settings": {"internal_domains": ["corp.io"]}}"#.into(),
    ));
    let p = Policy::from_sources(&s, &PolicyConfig::default()).unwrap();
    assert_eq!(p.evaluate(&input("read")).effect, Effect::Allow);
}

#[test]
fn reload_keeps_the_last_good_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.rego");
    std::fs::write(
        &file,
        "package agentgate\ndecision := {\"effect\": \"allow\", \"reasons\": [\"v1\"]}\n",
    )
    .unwrap();
    let p = Policy::load(dir.path(), &PolicyConfig::default()).unwrap();
    assert!(matches!(p.reload(false), Reload::Unchanged));
    let v1 = p.hash();

    std::fs::write(&file, "package agentgate\ndecision := {\n").unwrap();
    match p.reload(true) {
        Reload::Failed(e) => assert!(e.contains("policy.rego"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.hash(), v1);
    assert_eq!(p.evaluate(&input("read")).reasons, ["v1"]);
    assert!(p.status().last_error.is_some());

    std::fs::write(
        &file,
        "package agentgate\ndecision := {\"effect\": \"deny\", \"reasons\": [\"v2\"]}\n",
    )
    .unwrap();
    assert!(matches!(p.reload(true), Reload::Loaded { .. }));
    assert_eq!(p.evaluate(&input("read")).reasons, ["v2"]);
    assert!(p.status().last_error.is_none());

    // Test files are not part of the policy.
    std::fs::write(
        dir.path().join("x_test.rego"),
        "package agentgate\ndecision := 1\n",
    )
    .unwrap();
    assert!(matches!(p.reload(true), Reload::Loaded { .. }));
    assert_eq!(p.evaluate(&input("read")).reasons, ["v2"]);

    // All policy files removed: deny everything.
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(p.reload(false), Reload::Loaded { .. }));
    assert_eq!(p.evaluate(&input("read")).effect, Effect::Deny);
}

/// The shipped default policy and every template pass their own test tables.
#[test]
fn shipped_policies_pass_their_tests() {
    let intent = crate::intent::Intent::embedded(1 << 20).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dirs = runner::policy_dirs(&root);
    assert!(dirs.len() >= 6, "{dirs:?}");
    for dir in dirs {
        // Debug builds evaluate far slower than release; the bound is not under test here.
        let config = PolicyConfig {
            eval_timeout: Duration::from_secs(5),
            ..PolicyConfig::default()
        };
        let results = runner::run_dir(&dir, &intent, &config).unwrap();
        assert!(
            results.len() >= 8,
            "{}: {} cases",
            dir.display(),
            results.len()
        );
        let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
        assert!(failed.is_empty(), "{}: {failed:#?}", dir.display());
    }
}

#[test]
fn the_runner_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package agentgate\ndecision := {\"effect\": \"deny\", \"reasons\": [\"nope\"]}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.yaml"),
        "cases:\n  - name: expects allow\n    request: {method: GET, url: \"https://api.github.com/repos/a/b\"}\n    expect: allow\n  - name: expects deny\n    input: {action: {name: x}}\n    expect: deny\n    reason: nope\n  - name: bad\n    expect: maybe\n    input: {}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package agentgate_test\ntest_ok if { 1 == 1 }\ntest_bad if { 1 == 2 }\n",
    )
    .unwrap();
    let intent = crate::intent::Intent::embedded(1 << 20).unwrap();
    let results = runner::run_dir(dir.path(), &intent, &PolicyConfig::default()).unwrap();
    let summary: Vec<(&str, bool)> = results
        .iter()
        .map(|r| (r.name.as_str(), r.passed))
        .collect();
    assert_eq!(
        summary,
        [
            ("test_ok", true),
            ("test_bad", false),
            ("expects allow", false),
            ("expects deny", true),
            ("bad", false)
        ]
    );
    assert!(results[2].detail.contains("expected allow, got deny"));
}

#[test]
fn input_conversion_matches_regorus_own() {
    let v = json!({"a": [1, -2, 3.5, u64::MAX, null, true, "s"], "b": {"c": {}}, "d": []});
    assert_eq!(to_rego(&v), regorus::Value::from(v.clone()));
}

#[test]
fn a_repeated_input_is_answered_from_the_decisions_remembered() {
    let p = policy(
        "package agentgate\ndecision := {\"effect\": \"allow\"} if input.action.properties.class == \"read\"\ndecision := {\"effect\": \"deny\", \"reasons\": [\"no\"]} if input.action.properties.class != \"read\"\n",
    );
    let first = p.decide(&input("read"));
    assert_eq!(first.effect, Effect::Allow);
    // The same input, byte for byte: the same decision, not a new evaluation.
    assert!(Arc::ptr_eq(&first, &p.decide(&input("read"))));
    // Any other input is evaluated on its own.
    let other = p.decide(&input("write"));
    assert_eq!(other.effect, Effect::Deny);
    // This policy cannot read the time: a request a second later is the same request.
    assert!(p.clockless());
    let mut later = input("read");
    later["context"]["time"] = "2026-12-06T20:00:01Z".into();
    assert!(Arc::ptr_eq(&first, &p.decide(&later)));

    // One that reads it decides each second's request anew.
    let timed = policy(
        "package agentgate
decision := {\"effect\": \"allow\"} if input.context.time > \"2000\"\n",
    );
    assert!(!timed.clockless());
    let first = timed.decide(&input("read"));
    assert!(Arc::ptr_eq(&first, &timed.decide(&input("read"))));
    assert!(!Arc::ptr_eq(&first, &timed.decide(&later)));
}

#[test]
fn a_policy_that_reads_the_clock_is_evaluated_every_time() {
    let p = policy(
        "package agentgate\ndecision := {\"effect\": \"allow\", \"reasons\": [sprintf(\"%d\", [time.now_ns()])]}\n",
    );
    let first = p.decide(&input("read"));
    assert_eq!(first.effect, Effect::Allow);
    assert!(!Arc::ptr_eq(&first, &p.decide(&input("read"))));
}

#[test]
fn a_reload_forgets_the_decisions_of_the_policy_before() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rego");
    std::fs::write(
        &file,
        "package agentgate\ndecision := {\"effect\": \"allow\"}\n",
    )
    .unwrap();
    let p = Policy::load(dir.path(), &PolicyConfig::default()).unwrap();
    assert_eq!(p.decide(&input("read")).effect, Effect::Allow);
    std::fs::write(
        &file,
        "package agentgate\ndecision := {\"effect\": \"deny\", \"reasons\": [\"changed\"]}\n",
    )
    .unwrap();
    assert!(matches!(p.reload(true), Reload::Loaded { .. }));
    assert_eq!(p.decide(&input("read")).effect, Effect::Deny);
}

/// A Kubernetes ConfigMap volume: each file a symlink into `..data`, a symlink to a
/// timestamped directory that an update replaces. The update is seen without `force`.
#[test]
fn a_configmap_update_is_reloaded() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let version = |n: u32, reason: &str| {
        let d = dir.path().join(format!("..2026_12_07_0{n}"));
        std::fs::create_dir(&d).unwrap();
        let rego = format!(
            "package agentgate\ndecision := {{\"effect\": \"allow\", \"reasons\": [\"{reason}\"]}}\n"
        );
        std::fs::write(d.join("policy.rego"), rego).unwrap();
        d
    };
    let v1 = version(1, "one");
    symlink(&v1, dir.path().join("..data")).unwrap();
    symlink("..data/policy.rego", dir.path().join("policy.rego")).unwrap();
    let p = Policy::load(dir.path(), &PolicyConfig::default()).unwrap();
    assert_eq!(p.evaluate(&input("read")).reasons, ["one"]);

    // The kubelet's swap: a new directory, `..data` renamed over to point at it.
    let v2 = version(2, "two, longer");
    symlink(&v2, dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    assert!(matches!(p.reload(false), Reload::Loaded { .. }));
    assert_eq!(p.evaluate(&input("read")).reasons, ["two, longer"]);
}
