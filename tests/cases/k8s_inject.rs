//! `agentgate k8s inject` / `uninject` on the real binary: standard input and `-f`, the round
//! trip, refusals and warnings; with `AGENTGATE_K8S_OUT=DIR` the injected output of every
//! fixture (env, enforced, enforced --spire) is written there for schema validation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::proxy::BIN;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(name)).unwrap()
}

/// `agentgate ARGS` with `stdin` piped in.
fn agentgate(args: &[&str], stdin: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .env("AGENTGATE_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The documents of a stream as values (empty ones dropped).
fn values(text: &str) -> Vec<yaml_serde::Value> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- #") {
            docs.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
        }
    }
    docs.push(cur);
    docs.iter()
        .map(|d| yaml_serde::from_str::<yaml_serde::Value>(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn inject_from_stdin_and_file_then_uninject() {
    for name in ["deployment.yaml", "helm.yaml", "list.yaml"] {
        let original = fixture(name);
        let file = fixtures_dir().join(name);
        let file = file.to_str().unwrap();
        let piped = ok(
            &agentgate(&["k8s", "inject", "--mode", "enforced"], &original),
            "inject from stdin",
        );
        let read = ok(
            &agentgate(&["k8s", "inject", "--mode", "enforced", "-f", file], ""),
            "inject -f",
        );
        assert_eq!(piped, read, "{name}: stdin and -f differ");
        assert!(
            piped.contains("name: agentgate-iptables"),
            "{name}: {piped}"
        );
        assert!(piped.contains("agentgate.dev/injected: enforced"), "{name}");
        let again = ok(
            &agentgate(&["k8s", "inject", "-f", "-"], &piped),
            "reinject",
        );
        assert_eq!(again, piped, "{name}: injecting twice changed it");
        let back = ok(&agentgate(&["k8s", "uninject"], &piped), "uninject");
        assert_eq!(values(&back), values(&original), "{name}: uninject");
        for left in ["name: agentgate", "agentgate.dev/"] {
            assert!(!back.contains(left), "{name}: {left} left:\n{back}");
        }
    }
    // Documents inject does not touch keep every byte, comments included.
    let helm = fixture("helm.yaml");
    let out = ok(&agentgate(&["k8s", "inject"], &helm), "inject helm");
    let secret = helm.split("---\n").nth(2).unwrap();
    assert!(out.contains(secret), "Secret changed:\n{out}");
}

#[test]
fn refusal_exits_1_and_host_network_warns() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  securityContext:\n    runAsUser: 65532\n  containers:\n  - name: a\n    image: x\n";
    let out = agentgate(&["k8s", "inject"], pod);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("document 1 (Pod p)") && err.contains("UID 65532"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "partial output on error");
    ok(
        &agentgate(&["k8s", "inject", "--mode", "env"], pod),
        "env mode",
    );

    let host =
        "kind: Pod\nmetadata: {name: h}\nspec:\n  hostNetwork: true\n  containers: [{name: a}]\n";
    let out = agentgate(&["k8s", "inject"], host);
    assert_eq!(ok(&out, "hostNetwork"), host);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: document 1 (Pod h)") && err.contains("hostNetwork"),
        "{err}"
    );
}

#[test]
fn writes_injected_fixtures_for_validation() {
    let out_dir = std::env::var_os("AGENTGATE_K8S_OUT").map(PathBuf::from);
    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir).unwrap();
    }
    let variants: [(&str, &[&str]); 3] = [
        ("env", &["--mode", "env"]),
        ("enforced", &["--mode", "enforced"]),
        ("enforced-spire", &["--mode", "enforced", "--spire"]),
    ];
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        for (variant, flags) in variants {
            let mut args = vec!["k8s", "inject", "-f", path.to_str().unwrap()];
            args.extend_from_slice(flags);
            let text = ok(&agentgate(&args, ""), &format!("inject {stem} {variant}"));
            if let Some(dir) = &out_dir {
                std::fs::write(dir.join(format!("{stem}-{variant}.yaml")), text).unwrap();
            }
        }
    }
}

/// `kubectl kustomize DIR` (kustomize as kubectl ships it).
fn kustomize(dir: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl kustomize (install kubectl): {e}"));
    ok(&out, "kubectl kustomize")
}

/// The pod spec of the Deployment `app` in a stream, with its volumes by name (kustomize
/// and inject may list them in another order; containers keep theirs).
fn app_pod(stream: &str) -> yaml_serde::Value {
    let app = values(stream)
        .into_iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "app")
        .expect("Deployment app");
    let mut pod = app["spec"]["template"]["spec"].clone();
    if let Some(volumes) = pod.get_mut("volumes").and_then(|v| v.as_sequence_mut()) {
        volumes.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_owned());
    }
    pod
}

/// The sidecar overlay in deploy/ and `agentgate k8s inject` describe the same pod: what a
/// reader applies with `kubectl apply -k` is what inject gives their own manifests.
#[test]
fn the_sidecar_overlay_is_what_inject_makes_of_the_base() {
    let base = kustomize("deploy/kubernetes/base");
    let injected = ok(
        &agentgate(&["k8s", "inject", "--mode", "enforced"], &base),
        "inject",
    );
    let overlay = kustomize("deploy/kubernetes/sidecar");
    let (want, got) = (app_pod(&overlay), app_pod(&injected));
    assert_eq!(
        got,
        want,
        "inject of deploy/kubernetes/base differs from deploy/kubernetes/sidecar:\ninject:\n{}\noverlay:\n{}",
        yaml_serde::to_string(&got).unwrap(),
        yaml_serde::to_string(&want).unwrap()
    );
}

/// Every agentgate.toml the manifests ship is a config this binary accepts (with the
/// SPIFFE socket variable the pods set).
#[test]
fn the_shipped_pod_configs_are_valid() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut checked = 0;
    for overlay in std::fs::read_dir(&deploy).unwrap() {
        let config = overlay.unwrap().path().join("agentgate.toml");
        if !config.exists() {
            continue;
        }
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(BIN);
        // The test's own AGENTGATE_* variables would be read as config overrides.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AGENTGATE_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(["validate", "-c"])
            .arg(&config)
            .env("AGENTGATE_HOME", home.path())
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                "unix:///run/spire/sockets/agent.sock",
            )
            .output()
            .unwrap();
        ok(&out, &format!("agentgate validate -c {}", config.display()));
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} configs found under {}",
        deploy.display()
    );
}
