//! Real client programs as subprocesses: curl, Python requests/httpx, Node
//! undici fetch. Each talks to the proxy the way a user's agent would.

use super::proxy::Proxy;
use super::raw::RawResponse;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::Command;

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// A command with no proxy settings inherited from the developer's shell.
pub fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true).stdin(Stdio::null());
    cmd
}

pub async fn output(mut cmd: Command, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start ({e}); run scripts/test to install it"));
    tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[derive(Debug)]
pub struct CurlOut {
    pub status: u16,
    /// curl's `%{http_version}` towards the proxy's MITM side: "1.1" or "2".
    pub http_version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CurlOut {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "curl body is not JSON ({e}): status {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The curl arguments that route through `proxy` and trust its CA.
pub fn curl_proxy_args(proxy: &Proxy) -> Vec<String> {
    vec![
        "-sS".into(),
        "--max-time".into(),
        "150".into(),
        "-x".into(),
        proxy.proxy_url(),
        "--cacert".into(),
        proxy.ca_path.display().to_string(),
    ]
}

/// curl through the proxy; `args` carry the URL and any method/body/version flags.
pub async fn curl(proxy: &Proxy, args: &[&str]) -> CurlOut {
    let tmp = tempfile::tempdir().expect("tempdir");
    let head_file = tmp.path().join("headers");
    let body_file = tmp.path().join("body");
    let mut cmd = clean_command("curl");
    cmd.args(curl_proxy_args(proxy))
        .arg("-D")
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args);
    let out = output(cmd, "curl").await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, version) = stdout.trim().split_once(' ').expect("curl -w output");
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    CurlOut {
        status: code.parse().expect("http code"),
        http_version: version.to_owned(),
        headers: last_header_block(&head),
        body: std::fs::read(&body_file).unwrap_or_default(),
    }
}

/// curl's -D file holds the CONNECT answer first; the last block is the response.
fn last_header_block(dump: &str) -> Vec<(String, String)> {
    let blocks: Vec<&str> = dump
        .split("\r\n\r\n")
        .filter(|b| b.trim_start().starts_with("HTTP/"))
        .collect();
    let last = blocks.last().copied().unwrap_or_default();
    last.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `tests/clients/client.py LIB URL` with `HTTPS_PROXY` set and the proxy CA
/// as `verify`; returns the JSON it prints: {status, headers, body, http_version}.
pub async fn python(lib: &str, url: &str, proxy: &Proxy, extra: &[&str]) -> serde_json::Value {
    // scripts/test points this at a virtualenv holding requests and httpx.
    let python = std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = clean_command(&python);
    cmd.arg(clients_dir().join("client.py"))
        .arg(lib)
        .arg(url)
        .arg("--ca")
        .arg(&proxy.ca_path)
        .args(extra)
        .env("HTTPS_PROXY", proxy.proxy_url())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    parse_client_json(output(cmd, &format!("python3 client.py {lib}")).await, lib)
}

/// `tests/clients/fetch.mjs URL` (undici fetch + ProxyAgent with our CA).
pub async fn node_fetch(url: &str, proxy: &Proxy, extra: &[&str]) -> serde_json::Value {
    let dir = clients_dir();
    assert!(
        dir.join("node_modules/undici").is_dir(),
        "tests/clients/node_modules is missing: run scripts/test (or `npm ci` in tests/clients)"
    );
    let mut cmd = clean_command("node");
    cmd.current_dir(&dir)
        .arg(dir.join("fetch.mjs"))
        .arg(url)
        .arg("--proxy")
        .arg(proxy.proxy_url())
        .arg("--ca")
        .arg(&proxy.ca_path)
        .args(extra);
    parse_client_json(output(cmd, "node fetch.mjs").await, "node fetch")
}

fn parse_client_json(out: Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what} printed non-JSON ({e}): {stdout}"))
}

/// A curl result as a [`RawResponse`], for `assert_denied`.
pub fn from_curl(c: &CurlOut) -> RawResponse {
    RawResponse {
        status: c.status,
        headers: c.headers.clone(),
        body: c.body.clone(),
    }
}

/// A `client.py` / `fetch.mjs` result (`{status, headers, body}`) as a [`RawResponse`].
pub fn from_client(v: &serde_json::Value) -> RawResponse {
    let headers = v["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("client output without headers: {v}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    RawResponse {
        status: v["status"].as_u64().expect("status") as u16,
        headers,
        body: v["body"].as_str().unwrap_or_default().as_bytes().to_vec(),
    }
}
