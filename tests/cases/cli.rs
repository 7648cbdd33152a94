//! The command line: config validation (`run --check`, `validate`), unknown
//! keys, env overrides, the state dir and CA key permissions, `init`,
//! `ca export`, `--help`.

use crate::support::proxy::{self, ConfigBuilder, Launch, cli};
use crate::support::raw;
use crate::support::{TestEnv, assert_denied, assert_serves};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// Both ways of validating a config agree on `file`.
fn check(home: &Path, file: &str) -> Vec<Output> {
    vec![
        cli(home, &["run", "--check", "-c", file], &[]),
        cli(home, &["validate", "-c", file], &[]),
    ]
}

#[test]
fn valid_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cfg = ConfigBuilder::new()
        .set("proxy", "max_connections", "4096")
        .set("egress", "allow_ports", "[443]")
        .set("egress", "allow_private", "[]")
        .set("limits", "max_header_bytes", "65536")
        .set("limits", "header_read_timeout", "\"5s\"")
        .set("limits", "idle_timeout", "\"60s\"")
        .set("upstream", "connect_timeout", "\"5s\"")
        .set("upstream", "response_timeout", "\"3s\"")
        .set("log", "format", "\"pretty\"");
    let file = write(dir.path(), "good.toml", &cfg.render());
    for out in check(&home, &file) {
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "valid config rejected: {stdout}{stderr}\n{}",
            cfg.render()
        );
        assert!(
            !stdout.contains("READY"),
            "--check must not start the proxy"
        );
    }
}

#[test]
fn unknown_or_bad_keys_are_rejected_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cases = [
        (
            "unknown-key.toml",
            "bogus_knob",
            ConfigBuilder::new().set("proxy", "bogus_knob", "1"),
        ),
        (
            "unknown-section.toml",
            "bogus_section",
            ConfigBuilder::new().set("bogus_section", "x", "1"),
        ),
        (
            "bad-type.toml",
            "max_connections",
            ConfigBuilder::new().set("proxy", "max_connections", "\"lots\""),
        ),
        (
            "bad-limit.toml",
            "max_header_bytes",
            ConfigBuilder::new().set("limits", "max_header_bytes", "\"big\""),
        ),
    ];
    for (name, key, cfg) in cases {
        let file = write(dir.path(), name, &cfg.render());
        for out in check(&home, &file) {
            let (stdout, stderr) = text(&out);
            assert!(!out.status.success(), "{name}: accepted:\n{}", cfg.render());
            assert!(
                stderr.contains(key),
                "{name}: stderr should name {key:?}: {stderr}"
            );
            assert!(
                stderr.contains(name),
                "{name}: stderr should name the file: {stderr}"
            );
            assert!(!stdout.contains("READY"));
        }
        // `run` with the same file refuses to start.
        match proxy::launch(&home, Path::new(&file), &[]) {
            Launch::Ready(_) => panic!("{name}: proxy started with an invalid config"),
            Launch::Exited { status, stderr } => {
                assert!(!status.success(), "{name}: exit status {status}");
                assert!(stderr.contains(key), "{name}: {stderr}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_config_file() {
    let env = TestEnv::new().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_port = free.local_addr().unwrap().port();
    drop(free);
    let admin = format!("127.0.0.1:{admin_port}");
    // Scalar (string) and TOML-array overrides.
    let cfg = env
        .config()
        .resolve("api.github.com:8443", env.upstream.addr);
    let proxy = env.start_with_env(
        cfg,
        &[
            ("AGENTGATE_ADMIN_LISTEN", &admin),
            ("AGENTGATE_EGRESS_ALLOW_PORTS", "[8443]"),
        ],
    );
    assert_eq!(
        proxy.admin_addr.port(),
        admin_port,
        "AGENTGATE_ADMIN_LISTEN ignored"
    );
    let (_s, resp) = raw::connect(proxy.proxy_addr, "api.github.com:443").await;
    assert_denied(&resp, 403, "guard");
    let tls = raw::tunnel(
        proxy.proxy_addr,
        "api.github.com:8443",
        "api.github.com",
        &proxy.ca_path,
        &[b"http/1.1"],
    )
    .await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(&mut h1, raw::get("/echo?port=8443", "api.github.com:8443")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_key_is_private_and_loose_permissions_refused() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let home = env.home();
    let key = home.join("ca.key");
    let mode = std::fs::metadata(&key)
        .expect("ca.key exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "ca.key mode is {mode:o}");
    let ca_before = std::fs::read(home.join("ca.crt")).expect("ca.crt exists");
    assert_serves(&proxy).await;
    proxy.stop();

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = env.write_config(&env.config());
    match proxy::launch(&home, &config, &[]) {
        Launch::Ready(_) => panic!("proxy started with a world-readable ca.key"),
        Launch::Exited { status, stderr } => {
            assert!(!status.success(), "exit status {status}");
            // About the file's permissions: the word, its mode, or the chmod fix.
            let lower = stderr.to_ascii_lowercase();
            assert!(
                ["permission", "mode 0", "chmod"]
                    .iter()
                    .any(|w| lower.contains(w)),
                "the refusal should be about the key's permissions: {stderr}"
            );
            assert!(
                stderr.contains("ca.key"),
                "the refusal should name ca.key: {stderr}"
            );
        }
    }

    // Fixed permissions: starts again, with the same CA.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let proxy = env.start_default();
    assert_eq!(
        std::fs::read(home.join("ca.crt")).unwrap(),
        ca_before,
        "CA replaced on restart"
    );
    assert_serves(&proxy).await;
}

#[test]
fn init_creates_state_dir_and_ca_export_prints_ca() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("state").join("home");
    let out = cli(&home, &["init"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "init failed: {stdout}{stderr}");
    let crt = std::fs::read_to_string(home.join("ca.crt")).expect("init wrote ca.crt");
    assert!(crt.contains("-----BEGIN CERTIFICATE-----"));
    let mode = std::fs::metadata(home.join("ca.key"))
        .expect("ca.key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "ca.key mode is {mode:o}");

    let out = cli(&home, &["ca", "export"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "ca export failed: {stderr}");
    assert_eq!(
        stdout.trim_end(),
        crt.trim_end(),
        "ca export differs from ca.crt"
    );
    assert!(
        !stdout.contains("PRIVATE KEY"),
        "ca export must not print the key"
    );

    // init again keeps the CA.
    let out = cli(&home, &["init"], &[]);
    assert!(out.status.success(), "second init: {}", text(&out).1);
    assert_eq!(
        std::fs::read_to_string(home.join("ca.crt")).unwrap(),
        crt,
        "init replaced the CA"
    );
}

#[test]
fn help_works_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["init", "--help"],
        &["ca", "--help"],
        &["ca", "export", "--help"],
        &["validate", "--help"],
    ] {
        let out = cli(&home, args, &[]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "agentgate {args:?}: {stdout}{stderr}");
        assert!(
            stdout.contains("Usage"),
            "agentgate {args:?} printed no usage: {stdout}"
        );
    }
    let (stdout, _) = text(&cli(&home, &["--help"], &[]));
    for cmd in ["run", "init", "ca", "validate"] {
        assert!(stdout.contains(cmd), "--help does not list {cmd}: {stdout}");
    }
}
