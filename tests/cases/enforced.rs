//! Enforced mode end to end, the way a pod runs it, in a network namespace this test makes:
//! `agentgate k8s iptables --apply` installs the rules, AgentGate runs as UID 65532 with a
//! transparent listener, and an "agent" runs as UID 1000 with no proxy variables at all.
//! The agent's plain `curl` and Python `requests` are intercepted, gated, given the vault's
//! credential and audited; what the policy denies is denied; every way around AgentGate
//! tried here fails (a lying SNI, IPv6, raw TCP, UDP, the listener dialed directly), and
//! AgentGate's own upstream connections are not looped back into it.
//!
//! Needs root (namespaces, iptables): `scripts/test` runs as root in CI and installs
//! iptables; elsewhere the test says why it did not run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::support::certs::Pki;
use crate::support::proxy::{BIN, ConfigBuilder, Launch, cli_in, launch_in, toml_str};

const PROXY_UID: &str = "65532";
const AGENT_UID: &str = "1000";
const UPSTREAM: &str = "10.77.0.1";
const OTHER: &str = "10.77.0.2";
const UPSTREAM_V6: &str = "fd77::1";
const DNS: &str = "10.77.0.53";
const TOKEN: &str = "ghs_enforced_mode_vault_token";
/// The agent's interpreter (Debian's python3 with python3-requests, which scripts/test
/// installs): one that UID 1000 may run.
const AGENT_PYTHON: &str = "/usr/bin/python3";

/// A network namespace (with its /etc/netns overrides) removed on drop, with the
/// processes started in it.
struct Netns {
    name: String,
    etc: PathBuf,
    children: Vec<Child>,
}

impl Netns {
    fn new() -> Netns {
        // Unique per test even when tests share a process (cargo test).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("agentgate-e2e-{}-{n}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns {
            etc: PathBuf::from("/etc/netns").join(&name),
            name,
            children: Vec::new(),
        };
        let n = ns.name.as_str();
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        run(&[
            "ip", "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        for addr in [format!("{UPSTREAM}/24"), format!("{OTHER}/24")] {
            run(&["ip", "-n", n, "addr", "add", &addr, "dev", "v0"]);
        }
        let v6 = format!("{UPSTREAM_V6}/64");
        run(&[
            "ip", "-n", n, "-6", "addr", "add", &v6, "dev", "v0", "nodad",
        ]);
        run(&["ip", "-n", n, "link", "set", "v0", "up"]);
        run(&["ip", "-n", n, "link", "set", "v1", "up"]);
        // `ip netns exec` mounts these over /etc: the namespace's own names and resolver.
        std::fs::create_dir_all(&ns.etc).expect("create /etc/netns/<ns>");
        std::fs::write(
            ns.etc.join("hosts"),
            format!("127.0.0.1 localhost\n::1 localhost\n{UPSTREAM} api.github.com\n"),
        )
        .expect("write netns hosts");
        std::fs::write(ns.etc.join("resolv.conf"), format!("nameserver {DNS}\n"))
            .expect("write netns resolv.conf");
        ns
    }

    /// `ip netns exec <ns>`, then `setpriv` to `uid` when given.
    fn wrapper(&self, uid: Option<&str>) -> Vec<String> {
        let mut w: Vec<String> = ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if let Some(uid) = uid {
            w.extend(
                [
                    "setpriv",
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                ]
                .iter()
                .map(|s| (*s).to_owned()),
            );
        }
        w
    }

    /// Runs `argv` in the namespace as `uid` with only `env` (no proxy variables).
    fn exec(&self, uid: Option<&str>, env: &[(&str, &str)], argv: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        if let Some(uid) = uid {
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]);
        }
        cmd.arg("env")
            .arg("-i")
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv);
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?} in the namespace: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

fn run(argv: &[&str]) -> Output {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether this machine can run the test; `Err` says why not.
fn can_run() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root: network namespaces and iptables need root (CI runs as root)".into());
    }
    for tool in [
        "ip",
        "setpriv",
        "iptables-nft-restore",
        "ip6tables-nft-restore",
        "curl",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        // As root a missing tool is a broken setup, not a reason to skip.
        assert!(
            found,
            "{tool} is missing: scripts/test installs it (apt install iptables iproute2 util-linux curl)"
        );
    }
    Ok(())
}

/// The status of the first response in `curl -D -` output; 0 when there is none.
fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| head.starts_with("HTTP/"))
        .unwrap_or(0)
}

fn upstream_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("upstream log line"))
        .collect()
}

#[test]
fn an_agent_without_proxy_settings_is_gated_and_cannot_get_around_agentgate() {
    if let Err(why) = can_run() {
        eprintln!("SKIPPED enforced-mode test: {why}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("agentgate-e2e-enforced-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    // The agent (UID 1000) reads the shared CA bundle and the client script; nothing else.
    let chmod = |p: &Path, mode: &str| run(&["chmod", mode, &p.display().to_string()]);
    chmod(root, "0755");
    let shared = root.join("shared");
    std::fs::create_dir(&shared).expect("shared dir");
    chmod(&shared, "0755");
    let pki = Pki::new(root);
    chmod(&pki.upstream_ca_path, "0644");
    let (cert, key, log) = (
        root.join("up.crt"),
        root.join("up.key"),
        root.join("upstream.jsonl"),
    );
    pki.upstream_ca
        .leaf(&["api.github.com"], false)
        .write_pem(&cert, &key);

    let mut ns = Netns::new();

    // The "internet": one server on every address of the namespace.
    let python = std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/netns_upstream.py"
    );
    let mut upstream = Command::new("ip")
        .args(["netns", "exec", &ns.name, &python, script])
        .args([&cert, &key, &log])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the namespace's upstream");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(upstream.stdout.take().expect("stdout")),
        &mut ready,
    )
    .expect("upstream READY");
    assert_eq!(ready.trim(), "READY");
    ns.children.push(upstream);

    // The rules, as the init container installs them (twice: idempotent).
    let root_ns = ns.wrapper(None);
    let root_ns: Vec<&str> = root_ns.iter().map(String::as_str).collect();
    let home = root.join("state");
    for _ in 0..2 {
        let out = cli_in(
            &root_ns,
            &home,
            &["k8s", "iptables", "--apply", "--proxy-uid", PROXY_UID],
            &[],
        );
        assert!(out.status.success(), "k8s iptables --apply: {}", text(&out));
    }
    for save in ["iptables-save", "ip6tables-save"] {
        let out = ns.exec(None, &[], &[save]);
        let rules = String::from_utf8_lossy(&out.stdout);
        for jump in [
            "-A OUTPUT -p tcp -j AGENTGATE_OUTPUT",
            "-A OUTPUT -p udp -j AGENTGATE_OUTPUT",
        ] {
            assert_eq!(
                rules.matches(jump).count(),
                1,
                "{save} after two applies:\n{rules}"
            );
        }
        assert!(
            rules.contains(&format!("--uid-owner {PROXY_UID}")),
            "{rules}"
        );
    }
    // AgentGate: the vault's GitHub credential, then `run` as its own UID.
    let config = ConfigBuilder::new()
        .set("proxy", "listen", &toml_str("127.0.0.1:18080"))
        .set("admin", "listen", &toml_str("127.0.0.1:18081"))
        .set(
            "transparent",
            "listen",
            r#"["127.0.0.1:15001", "[::1]:15001"]"#,
        )
        .set("health", "listen", &toml_str("127.0.0.1:15021"))
        .set("pod", "agent", &toml_str("app"))
        .set("pod", "owner", &toml_str("ops@example.com"))
        .set(
            "ca",
            "export_bundle",
            &toml_str(&shared.join("ca-bundle.pem").display().to_string()),
        )
        .set("egress", "allow_ports", "[443, 80]")
        .set("policy", "dir", "\"\"")
        .set(
            "upstream",
            "extra_roots",
            &format!(
                "[{}]",
                toml_str(&pki.upstream_ca_path.display().to_string())
            ),
        )
        .resolve(
            "api.github.com:443",
            format!("{UPSTREAM}:443").parse().unwrap(),
        )
        .resolve(
            "api.github.com:80",
            format!("{UPSTREAM}:80").parse().unwrap(),
        );
    let config_path = root.join("agentgate.toml");
    std::fs::write(&config_path, config.render()).expect("write config");
    chmod(&config_path, "0644");
    let secret = root.join("github.token");
    std::fs::write(&secret, format!("{TOKEN}\n")).expect("write token");
    chmod(&secret, "0600");
    let cfg = config_path.display().to_string();
    let secret_arg = secret.display().to_string();
    let out = crate::support::proxy::cli(
        &home,
        &[
            "vault",
            "set",
            "github",
            "--kind",
            "static",
            "--secret-file",
            &secret_arg,
        ],
        &[("AGENTGATE_CONFIG", &cfg)],
    );
    assert!(out.status.success(), "vault set: {}", text(&out));
    for owned in [&home, &shared] {
        run(&[
            "chown",
            "-R",
            &format!("{PROXY_UID}:{PROXY_UID}"),
            &owned.display().to_string(),
        ]);
    }
    let proxy_ns = ns.wrapper(Some(PROXY_UID));
    let proxy_ns: Vec<&str> = proxy_ns.iter().map(String::as_str).collect();
    let proxy = match launch_in(&proxy_ns, &home, &config_path, &[]) {
        Launch::Ready(p) => p,
        Launch::Exited { status, stderr } => panic!("agentgate exited ({status}):\n{stderr}"),
    };
    let lines = proxy.stdout_lines().join("\n");
    assert!(lines.contains("transparent=127.0.0.1:15001"), "{lines}");

    // The agent: no proxy variables, only CA trust (what the sidecar's bundle gives it).
    let bundle = shared.join("ca-bundle.pem").display().to_string();
    let env = [
        ("SSL_CERT_FILE", bundle.as_str()),
        ("CURL_CA_BUNDLE", bundle.as_str()),
        ("REQUESTS_CA_BUNDLE", bundle.as_str()),
    ];
    let agent = |argv: &[&str]| ns.exec(Some(AGENT_UID), &env, argv);
    let curl = |extra: &[&str]| {
        let mut argv = vec!["curl", "-sS", "--max-time", "10", "-D", "-"];
        argv.extend_from_slice(extra);
        agent(&argv)
    };

    // 1. curl, then Python requests: gated, credential injected, answered.
    // (The echo of the credential in the answer comes back masked: the agent never sees it.)
    let out = curl(&["https://api.github.com/repos/acme/web"]);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && status(&got) == 200,
        "curl read: {}",
        text(&out)
    );
    assert!(
        !got.contains(TOKEN),
        "the credential leaked back to the agent: {got}"
    );
    let py = "import requests\nr = requests.get('https://api.github.com/repos/acme/web/issues', timeout=10)\nprint(r.status_code)";
    // Debian's Python and requests: the venv's interpreter lives under /root.
    let out = agent(&[AGENT_PYTHON, "-c", py]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200\n",
        "requests: {}",
        text(&out)
    );

    // 2. What the default policy denies is denied.
    let out = curl(&["-X", "DELETE", "https://api.github.com/repos/acme/web"]);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(status(&got), 403, "DELETE: {}", text(&out));
    assert!(
        got.to_ascii_lowercase()
            .contains("x-agentgate-denied-by: policy"),
        "{got}"
    );

    // 3. Ways around it, each of which must fail without reaching the upstream.
    let lie = curl(&[
        "--resolve",
        &format!("api.github.com:443:{OTHER}"),
        "https://api.github.com/lie",
    ]);
    assert!(
        !lie.status.success(),
        "a connection to {OTHER} named api.github.com: {}",
        text(&lie)
    );
    let v6 = curl(&[
        "--resolve",
        &format!("api.github.com:443:[{UPSTREAM_V6}]"),
        "https://api.github.com/v6",
    ]);
    assert!(
        !v6.status.success(),
        "IPv6 straight to the upstream: {}",
        text(&v6)
    );
    let direct = curl(&["http://127.0.0.1:15001/"]);
    let got = String::from_utf8_lossy(&direct.stdout).into_owned();
    assert!(
        status(&got) == 400 && got.contains("not_redirected"),
        "listener dialed directly: {}",
        text(&direct)
    );
    let raw = format!(
        "import socket\ns = socket.create_connection(('{UPSTREAM}', 9999), timeout=5)\ns.sendall(b'\\x00\\x01not tls, not http')\nprint(repr(s.recv(100)))"
    );
    let out = agent(&[AGENT_PYTHON, "-c", &raw]);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        got.trim() == "b''" || !out.status.success(),
        "raw TCP got an answer: {}",
        text(&out)
    );
    let udp = format!(
        "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(b'q', ('{DNS}', 53))\nprint('dns ok')\ntry:\n    u.sendto(b'quic?', ('{UPSTREAM}', 443))\n    print('udp escaped')\nexcept PermissionError:\n    print('udp dropped')"
    );
    let out = agent(&[AGENT_PYTHON, "-c", &udp]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "dns ok\nudp dropped\n",
        "{}",
        text(&out)
    );

    // 4. Plain HTTP is gated too (by Host), and leaves only through AgentGate.
    let out = curl(&["http://api.github.com/zen"]);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(status(&got), 0, "plain HTTP: {}", text(&out));

    // What reached the "internet": only AgentGate's forwarded requests, never a bypass.
    let seen = upstream_log(&log);
    assert!(
        seen.iter().all(|r| r["kind"] == "request"),
        "a raw connection got through: {seen:?}"
    );
    for r in &seen {
        assert!(
            r["headers"]["via"]
                .as_str()
                .is_some_and(|v| v.contains("agentgate")),
            "a request without AgentGate's Via: {r}"
        );
        let path = r["path"].as_str().unwrap_or("");
        assert!(
            !matches!(path, "/lie" | "/v6"),
            "a bypass reached the upstream: {r}"
        );
    }
    for path in ["/repos/acme/web", "/repos/acme/web/issues"] {
        let r = seen
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} never reached the upstream: {seen:?}"));
        assert_eq!(
            r["headers"]["authorization"],
            format!("Bearer {TOKEN}"),
            "the vault's credential was injected: {r}"
        );
    }

    // PANIC applies to the pod like to any agent: its next request is refused, and the
    // token refresher does not quietly register it again.
    let panic = cli_in(
        &root_ns,
        &home,
        &["panic", "--agent", "app", "--reason", "test"],
        &[("AGENTGATE_CONFIG", &cfg)],
    );
    assert!(panic.status.success(), "panic: {}", text(&panic));
    let out = curl(&["https://api.github.com/repos/acme/web"]);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success() || status(&got) == 403,
        "after PANIC: {}",
        text(&out)
    );
    let after_panic = upstream_log(&log).len();
    assert_eq!(
        after_panic,
        seen.len(),
        "a request reached the upstream after PANIC"
    );

    // The audit log: the pod's agent, each redirected connection with where it was going,
    // the refusals with their reasons, and an intact chain.
    drop(proxy);
    let export = cli_in(
        &[],
        &home,
        &["audit", "export"],
        &[("AGENTGATE_CONFIG", &cfg)],
    );
    assert!(export.status.success(), "audit export: {}", text(&export));
    let records: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("export line")["record"].clone())
        .collect();
    let all = serde_json::to_string(&records).expect("records");
    assert!(
        all.contains("spiffe://agentgate.local/agent/app"),
        "the pod's agent is the caller"
    );
    for expected in [
        format!("transparent: original destination {UPSTREAM}:443"),
        format!("does not resolve to {OTHER}"),
        format!("does not resolve to {UPSTREAM_V6}"),
        "protocol_not_supported".to_owned(),
        "not_redirected".to_owned(),
        "identity_revoked".to_owned(),
        format!("transparent: original destination {UPSTREAM}:80"),
    ] {
        assert!(
            all.contains(&expected),
            "no audit record with {expected:?}:\n{all}"
        );
    }
    let verify = cli_in(
        &[],
        &home,
        &["audit", "verify"],
        &[("AGENTGATE_CONFIG", &cfg)],
    );
    assert!(verify.status.success(), "audit verify: {}", text(&verify));
    let _ = BIN;
}

/// Legacy iptables (older nodes, kube-proxy in legacy mode) gets the same rules, once, and
/// the default run only prints them.
#[test]
fn the_legacy_backend_installs_the_same_rules_once_and_the_default_only_prints() {
    if let Err(why) = can_run() {
        eprintln!("SKIPPED legacy iptables test: {why}");
        return;
    }
    let ns = Netns::new();
    let root_ns = ns.wrapper(None);
    let root_ns: Vec<&str> = root_ns.iter().map(String::as_str).collect();
    let home = tempfile::tempdir().expect("tempdir");
    let dry = cli_in(&root_ns, home.path(), &["k8s", "iptables"], &[]);
    let printed = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        dry.status.success() && printed.contains(&format!("-d {DNS} -p udp --dport 53 -j RETURN")),
        "dry run: {}",
        text(&dry)
    );
    let before = ns.exec(None, &[], &["iptables-nft-save"]);
    assert!(
        !String::from_utf8_lossy(&before.stdout).contains("AGENTGATE"),
        "the dry run changed the rules"
    );
    for _ in 0..2 {
        let out = cli_in(
            &root_ns,
            home.path(),
            &["k8s", "iptables", "--apply", "--backend", "legacy"],
            &[],
        );
        assert!(out.status.success(), "--backend legacy: {}", text(&out));
    }
    for save in ["iptables-legacy-save", "ip6tables-legacy-save"] {
        let rules = String::from_utf8_lossy(&ns.exec(None, &[], &[save]).stdout).into_owned();
        assert_eq!(
            rules
                .matches("-A OUTPUT -p tcp -j AGENTGATE_OUTPUT")
                .count(),
            1,
            "{save}:\n{rules}"
        );
        assert!(
            rules.contains("--to-ports 15001") && rules.contains("-p udp -j DROP"),
            "{save}:\n{rules}"
        );
    }
}
