#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::stream::split;
use super::*;

const WORKLOADS: [&str; 8] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "List",
];

fn fixtures() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/k8s");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 9, "fixtures missing: {out:?}");
    out
}

fn option_sets() -> Vec<Options> {
    vec![
        Options::default(),
        Options {
            mode: Mode::Env,
            ..Options::default()
        },
        Options {
            spire: true,
            image: "registry.local:5000/agentgate:dev".into(),
            ..Options::default()
        },
    ]
}

fn docs(text: &str) -> Vec<(&str, Value)> {
    split(text)
        .into_iter()
        .map(|d| (d.body, yaml_serde::from_str(d.body).unwrap()))
        .collect()
}

fn kind(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn one(text: &str, opts: &Options) -> Value {
    let out = inject(text, opts).unwrap();
    yaml_serde::from_str(&out.text).unwrap()
}

fn pod_spec(v: &Value) -> &Value {
    &v["spec"]["template"]["spec"]
}

fn names(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[test]
fn round_trips_every_fixture() {
    for (file, x) in fixtures() {
        for opts in option_sets() {
            let what = format!("{file} {:?}", opts.mode);
            let injected = inject(&x, &opts).unwrap();
            assert!(
                injected.warnings.is_empty(),
                "{what}: {:?}",
                injected.warnings
            );
            let (orig, inj) = (docs(&x), docs(&injected.text));
            assert_eq!(orig.len(), inj.len(), "{what}: document count");
            for ((ob, ov), (ib, _)) in orig.iter().zip(&inj) {
                if !WORKLOADS.contains(&kind(ov)) {
                    assert_eq!(ob, ib, "{what}: non-workload document changed");
                }
            }
            let again = inject(&injected.text, &opts).unwrap();
            assert_eq!(
                again.text, injected.text,
                "{what}: inject is not idempotent"
            );
            let back = uninject(&injected.text).unwrap();
            let back_docs = docs(&back.text);
            assert_eq!(orig.len(), back_docs.len(), "{what}: document count");
            for (i, ((ob, ov), (bb, bv))) in orig.iter().zip(&back_docs).enumerate() {
                assert_eq!(ov, bv, "{what}: document {i} differs after uninject:\n{bb}");
                if inj[i].0 == *ob {
                    assert_eq!(ob, bb, "{what}: untouched document {i} changed");
                }
            }
            assert_eq!(uninject(&x).unwrap().text, x, "{what}: uninject of clean");
        }
    }
}

#[test]
fn deployment_gets_everything_in_order() {
    let x = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/k8s/deployment.yaml"
    ))
    .unwrap();
    let v = one(&x, &Options::default());
    let spec = pod_spec(&v);
    assert_eq!(
        names(&spec["initContainers"]),
        ["agentgate-iptables", "agentgate", "migrate"]
    );
    assert_eq!(
        names(&spec["volumes"]),
        [
            "workspace",
            "agentgate-state",
            "agentgate-ca",
            "agentgate-config",
            "agentgate-policies",
            "agentgate-xtables"
        ]
    );
    assert_eq!(
        spec["initContainers"][0]["image"].as_str(),
        Some("ghcr.io/agentgate/agentgate-init:0.1.0")
    );
    assert_eq!(
        spec["initContainers"][1]["restartPolicy"].as_str(),
        Some("Always")
    );
    let agent_env = names(&spec["containers"][0]["env"]);
    assert_eq!(
        agent_env.iter().filter(|n| **n == "SSL_CERT_FILE").count(),
        1
    );
    assert!(agent_env.contains(&"HTTPLIB2_CA_CERTS"));
    assert!(
        !agent_env.contains(&"HTTPS_PROXY"),
        "enforced sets no proxy"
    );
    for c in spec["containers"].as_sequence().unwrap() {
        let mounts = c["volumeMounts"].as_sequence().unwrap();
        let ca = mounts.last().unwrap();
        assert_eq!(ca["mountPath"].as_str(), Some("/var/run/agentgate"));
        assert_eq!(ca["readOnly"].as_bool(), Some(true));
    }
    let ann = &v["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann[INJECTED].as_str(), Some("enforced"));
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        ann[KEPT].as_str(),
        Some("containers[agent].env[SSL_CERT_FILE]")
    );

    let env = one(
        &x,
        &Options {
            mode: Mode::Env,
            spire: true,
            ..Options::default()
        },
    );
    let spec = pod_spec(&env);
    assert_eq!(names(&spec["initContainers"]), ["agentgate", "migrate"]);
    assert!(!names(&spec["volumes"]).contains(&"agentgate-xtables"));
    assert!(names(&spec["volumes"]).contains(&"agentgate-spire"));
    assert!(names(&spec["containers"][1]["env"]).contains(&"HTTPS_PROXY"));
    let sidecar = &spec["initContainers"][0];
    assert!(names(&sidecar["env"]).contains(&"SPIFFE_ENDPOINT_SOCKET"));
    assert!(names(&sidecar["volumeMounts"]).contains(&"agentgate-spire"));
}

#[test]
fn other_options_reinject() {
    let x = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/k8s/helm.yaml"
    ))
    .unwrap();
    let env = Options {
        mode: Mode::Env,
        ..Options::default()
    };
    let other_image = Options {
        image: "example.com/ag:2".into(),
        ..Options::default()
    };
    let enforced = inject(&x, &Options::default()).unwrap().text;
    let via_env = inject(&inject(&x, &env).unwrap().text, &Options::default()).unwrap();
    assert_eq!(docs(&via_env.text), docs(&enforced));
    let moved = inject(&enforced, &other_image).unwrap().text;
    assert!(moved.contains("example.com/ag-init:2"), "{moved}");
    assert_eq!(docs(&moved), docs(&inject(&x, &other_image).unwrap().text));
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n";

fn refused(spec: &str, opts: &Options) -> String {
    let input = format!("{POD}{spec}");
    match inject(&input, opts) {
        Err(e) => e.to_string(),
        Ok(out) => panic!("not refused:\n{}", out.text),
    }
}

#[test]
fn refusals_name_document_workload_and_container() {
    let opts = Options::default();
    let e = refused(
        "  containers:\n  - name: a\n    env:\n    - {name: SSL_CERT_FILE, value: /etc/x.pem}\n",
        &opts,
    );
    assert!(
        e.contains("document 1 (Pod p)")
            && e.contains("container a")
            && e.contains("SSL_CERT_FILE"),
        "{e}"
    );
    let e = refused(
        "  containers:\n  - name: a\n    env:\n    - name: NODE_EXTRA_CA_CERTS\n      valueFrom: {configMapKeyRef: {name: c, key: k}}\n",
        &opts,
    );
    assert!(
        e.contains("NODE_EXTRA_CA_CERTS") && e.contains("valueFrom"),
        "{e}"
    );
    let e = refused(
        "  containers:\n  - name: a\n    volumeMounts:\n    - {name: mine, mountPath: /var/run/agentgate/}\n",
        &opts,
    );
    assert!(
        e.contains("container a") && e.contains("volume mine"),
        "{e}"
    );
    let e = refused("  containers:\n  - name: a\n  - name: agentgate\n", &opts);
    assert!(e.contains("container named agentgate"), "{e}");
    let e = refused(
        "  containers:\n  - name: a\n  volumes:\n  - {name: agentgate-ca, emptyDir: {}}\n",
        &opts,
    );
    assert!(e.contains("volume named agentgate-ca"), "{e}");
    let e = refused(
        "  containers:\n  - name: a\n    securityContext: {runAsUser: 65532}\n",
        &opts,
    );
    assert!(
        e.contains("container a runs as UID 65532 (its securityContext)"),
        "{e}"
    );
    let e = refused(
        "  securityContext: {runAsUser: 65532}\n  containers:\n  - name: b\n",
        &opts,
    );
    assert!(
        e.contains("container b runs as UID 65532 (the pod's"),
        "{e}"
    );
    // A container's own UID wins over the pod's, and env mode has no redirection to escape.
    let ok = format!(
        "{POD}  securityContext: {{runAsUser: 65532}}\n  containers:\n  - name: b\n    securityContext: {{runAsUser: 10}}\n"
    );
    inject(&ok, &opts).unwrap();
    let env = Options {
        mode: Mode::Env,
        ..Options::default()
    };
    inject(
        &format!("{POD}  securityContext: {{runAsUser: 65532}}\n  containers:\n  - name: b\n"),
        &env,
    )
    .unwrap();
    let e = refused("  containers: {}\n", &opts);
    assert!(e.contains("spec.containers"), "{e}");
}

#[test]
fn document_numbers_skip_empty_documents() {
    let input = format!(
        "---\n# c\n---\nkind: ConfigMap\n---\n{POD}  containers:\n  - name: a\n    securityContext: {{runAsUser: 65532}}\n"
    );
    let e = inject(&input, &Options::default()).unwrap_err().to_string();
    assert!(e.starts_with("document 2 (Pod p)"), "{e}");
    let e = inject("a: [\n", &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("document 1 is not valid YAML"), "{e}");
}

#[test]
fn host_network_is_skipped_with_a_warning() {
    let input = format!("{POD}  hostNetwork: true\n  containers:\n  - name: a\n");
    let out = inject(&input, &Options::default()).unwrap();
    assert_eq!(out.text, input);
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].contains("document 1 (Pod p)") && out.warnings[0].contains("hostNetwork")
    );
}

#[test]
fn opted_out_and_other_kinds_are_byte_identical() {
    let input = "# keep\nkind: Service\nmetadata: {name:  s}\n---\nkind: Deployment\nmetadata:\n  annotations: {agentgate.dev/inject: \"false\"}\nspec: {template: {spec: {containers: [{name: a}]}}}\n";
    assert_eq!(inject(input, &Options::default()).unwrap().text, input);
}

#[test]
fn uninject_rejects_an_unknown_marker() {
    let input = format!("{POD}  containers:\n  - name: a\n").replace(
        "name: p\n",
        "name: p\n  annotations: {agentgate.dev/injected: yes}\n",
    );
    let e = uninject(&input).unwrap_err().to_string();
    assert!(e.contains("expected env or enforced"), "{e}");
}

#[test]
fn init_image_is_derived_from_the_image() {
    for (image, init) in [
        (
            "ghcr.io/agentgate/agentgate:0.1.0",
            "ghcr.io/agentgate/agentgate-init:0.1.0",
        ),
        ("localhost:5000/agentgate", "localhost:5000/agentgate-init"),
        ("localhost:5000/ag:dev", "localhost:5000/ag-init:dev"),
        ("agentgate", "agentgate-init"),
    ] {
        assert_eq!(init_image_for(image).unwrap(), init);
    }
    assert!(init_image_for("ghcr.io/a/b@sha256:00").is_err());
}

#[test]
fn sidecar_follows_the_contract() {
    let opts = Options {
        secret: "s".into(),
        ..Options::default()
    };
    let c = sidecar(&opts).unwrap();
    assert_eq!(c["name"].as_str(), Some("agentgate"));
    assert_eq!(c["image"].as_str(), Some(DEFAULT_IMAGE));
    assert_eq!(c["securityContext"]["runAsUser"].as_i64(), Some(PROXY_UID));
    assert_eq!(
        c["env"][1]["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("s")
    );
    assert_eq!(
        c["env"][2]["valueFrom"]["secretKeyRef"]["key"].as_str(),
        Some("vault-key")
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["port"].as_i64(), Some(15021));
}
