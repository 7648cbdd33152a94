//! A real SPIFFE Workload API server (`tests/support/workload_api.py`, Python
//! grpcio) standing in for a SPIRE agent: serves `FetchJWTBundles` on a unix
//! socket from the spiffe crate's own `workload.proto`, with bundle sets pushed
//! from the test. Plus P-256 JWKS helpers for building bundles.

use super::clients::clean_command;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/workload_api.py")
}

/// The Python interpreter: `AGENTGATE_TEST_PYTHON` (scripts/test points it at
/// target/e2e-venv, which has grpcio and grpcio-tools) or `python3`.
fn python() -> String {
    std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `<spiffe package dir>/src/proto/workload.proto` of the spiffe version this
/// crate depends on, found once per test process with `cargo metadata`.
pub fn proto_path() -> &'static Path {
    static PROTO: OnceLock<PathBuf> = OnceLock::new();
    PROTO.get_or_init(find_proto)
}

fn find_proto() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Limited to the host platform: a full `cargo metadata` wants the manifests
    // of every platform's dependencies, which a build never downloaded.
    let out = std::process::Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--filter-platform"])
        .arg(host_triple())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cargo} metadata`: {e}"));
    assert!(
        out.status.success(),
        "`{cargo} metadata` failed: {}",
        out.status
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    // The spiffe package our crate (the resolve root) depends on, by package id.
    let root = &meta["resolve"]["root"];
    let id = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .find(|n| n["id"] == *root)
        .and_then(|n| n["deps"].as_array())
        .and_then(|deps| deps.iter().find(|d| d["name"] == "spiffe"))
        .map(|d| d["pkg"].clone())
        .expect("agentgate does not depend on spiffe (cargo metadata)");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["id"] == id)
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("no package {id} in cargo metadata"));
    let proto = Path::new(manifest)
        .parent()
        .expect("manifest dir")
        .join("src/proto/workload.proto");
    assert!(proto.is_file(), "{} is missing", proto.display());
    proto
}

fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{rustc} -vV`: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("no host: line in `{rustc} -vV`"))
}

/// A running `workload_api.py`; killed on drop.
pub struct WorkloadApi {
    /// The unix socket it serves on (absolute).
    pub socket: PathBuf,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl WorkloadApi {
    /// Starts the server on `<dir>/wl.sock` and waits for READY. No bundle set
    /// yet: streams opened before [`set_bundles`](Self::set_bundles) wait for it.
    pub async fn start(dir: &Path) -> WorkloadApi {
        // Unix socket paths are limited to ~107 bytes: keep the name short.
        let socket = std::path::absolute(dir.join("wl.sock")).expect("absolute socket path");
        let python = python();
        let mut cmd = clean_command(&python);
        cmd.arg(script())
            .arg("--proto")
            .arg(proto_path())
            .arg("--socket")
            .arg(&socket)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "workload_api.py: cannot start {python} ({e}); run scripts/test \
                 (installs grpcio and grpcio-tools in target/e2e-venv)"
            )
        });
        let stdin = child.stdin.take().expect("workload_api.py stdin");
        let mut stdout =
            BufReader::new(child.stdout.take().expect("workload_api.py stdout")).lines();
        let line = tokio::time::timeout(START_TIMEOUT, stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("workload_api.py: no READY within {START_TIMEOUT:?}"))
            .expect("read workload_api.py stdout");
        match line.as_deref() {
            Some("READY") => {}
            Some(other) => panic!("workload_api.py: expected READY, got {other:?}"),
            None => {
                let status = child.wait().await.expect("workload_api.py exit status");
                panic!(
                    "workload_api.py exited before READY ({status}); see its stderr above. \
                     Does {python} have grpcio and grpcio-tools? Run scripts/test (it installs \
                     them in target/e2e-venv) or set AGENTGATE_TEST_PYTHON"
                );
            }
        }
        WorkloadApi {
            socket,
            child,
            stdin,
            stdout,
        }
    }

    /// `unix:///abs/path/wl.sock`, for `WorkloadApiClient::connect_to` or
    /// `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Replaces the bundle set (`{"<trust domain>": <JWKS>, ...}`; a JWKS given
    /// as a JSON string is sent verbatim) and pushes it to every open
    /// `FetchJWTBundles` stream. Returns how many streams were open.
    pub async fn set_bundles(&mut self, bundles: Value) -> usize {
        self.command(json!({ "bundles": bundles })).await
    }

    /// Sets the JWT-SVID `FetchJWTSVID` answers with (`{"spiffe_id", "token",
    /// "audience": [...]}`), or removes it with `null`.
    pub async fn set_svid(&mut self, svid: Value) {
        self.command(json!({ "svid": svid })).await;
    }

    async fn command(&mut self, command: Value) -> usize {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to workload_api.py");
        self.stdin
            .flush()
            .await
            .expect("flush workload_api.py stdin");
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("workload_api.py: no reply within {COMMAND_TIMEOUT:?}"))
            .expect("read workload_api.py stdout")
            .expect("workload_api.py exited");
        reply
            .strip_prefix("OK ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("workload_api.py: {command} got {reply:?}"))
    }

    /// One raw `FetchJWTBundles` call from a Python grpc client, with or
    /// without the `workload.spiffe.io: true` metadata. Returns
    /// `{"ok": true, "bundles": {td: JWKS}}` for the first response, or
    /// `{"ok": false, "code": "INVALID_ARGUMENT", "details": "..."}`.
    pub async fn probe(&self, with_header: bool) -> Value {
        let mut cmd = clean_command(&python());
        cmd.arg(script())
            .arg("--proto")
            .arg(proto_path())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--probe")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        if !with_header {
            cmd.arg("--no-header");
        }
        let out = super::clients::output(cmd, "workload_api.py --probe").await;
        assert!(
            out.status.success(),
            "workload_api.py --probe: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "workload_api.py --probe printed no JSON ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Closes stdin (the server stops, ending every open stream) and waits
    /// for the process to exit.
    pub async fn stop(self) -> ExitStatus {
        let WorkloadApi {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("workload_api.py: did not exit within {COMMAND_TIMEOUT:?}"))
            .expect("workload_api.py exit status")
    }
}

/// base64url without padding (RFC 7515 §2), as JWKs want.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh EC P-256 signing key (ES256) with a key id.
pub struct EcKey {
    pub kid: String,
    pub pair: EcdsaKeyPair,
}

impl EcKey {
    pub fn generate(kid: &str) -> EcKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        EcKey {
            kid: kid.to_owned(),
            pair,
        }
    }

    /// The public key as a JWK, `use: jwt-svid` like SPIRE's bundles.
    pub fn jwk(&self) -> Value {
        let public = self.pair.public_key().as_ref(); // 0x04 || x || y
        assert_eq!(public.len(), 65, "uncompressed P-256 point");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(&public[1..33]),
            "y": b64url(&public[33..65]),
            "kid": self.kid,
            "use": "jwt-svid",
        })
    }
}

/// A JWKS holding the public keys of `keys`.
pub fn jwks(keys: &[&EcKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}
