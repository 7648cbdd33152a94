//! A `curl` POST through the proxy that may be held (consent): started in the background,
//! awaited later, and never asserting on its own (a held request may be cut off on purpose).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::clients::{clean_command, output};
use super::raw::RawResponse;

/// What one `curl` run gave: exit code, status (0 when none), last header block, body.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0 = a response; 28 = --max-time).
    pub exit: Option<i32>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: String,
    /// When curl exited.
    pub done: Instant,
}

impl Curl {
    pub fn raw(&self) -> RawResponse {
        RawResponse {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        self.raw().json()
    }

    /// Asserts curl exited 0 with an answer.
    pub fn answered(&self) -> &Self {
        assert_eq!(
            self.exit,
            Some(0),
            "curl failed: {}\nstatus {} body {}",
            self.stderr,
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    pub fn request_id(&self) -> String {
        self.header("x-agentgate-request-id")
            .unwrap_or_else(|| panic!("no X-AgentGate-Request-Id in {:?}", self.headers))
            .to_owned()
    }
}

/// A curl running in the background.
pub type Spawned = tokio::task::JoinHandle<Curl>;

/// `curl -X POST -H 'Content-Type: application/json' EXTRA… --data-binary BODY URL` through
/// `proxy_url` (trusting `ca`), bounded by `max_time` seconds.
pub fn post_json(
    proxy_url: String,
    ca: PathBuf,
    url: &str,
    body: &str,
    max_time: u64,
    extra: &[&str],
) -> Spawned {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["--data-binary".to_owned(), body.to_owned(), url.to_owned()]);
    tokio::spawn(async move {
        let tmp = tempfile::tempdir().expect("tempdir");
        let head_file = tmp.path().join("headers");
        let body_file = tmp.path().join("body");
        let mut cmd = clean_command("curl");
        cmd.args(["-sS", "--max-time", &max_time.to_string(), "-x", &proxy_url])
            .arg("--cacert")
            .arg(&ca)
            .arg("-D")
            .arg(&head_file)
            .arg("-o")
            .arg(&body_file)
            .args(["-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "Content-Type: application/json"])
            .args(&args);
        let out = output(cmd, "curl").await;
        let head = std::fs::read_to_string(&head_file).unwrap_or_default();
        Curl {
            exit: out.status.code(),
            status: String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            headers: last_header_block(&head),
            body: std::fs::read(&body_file).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            done: Instant::now(),
        }
    })
}

/// Awaits a held request, which must finish within `secs`.
pub async fn finish(held: Spawned, secs: u64) -> Curl {
    tokio::time::timeout(Duration::from_secs(secs), held)
        .await
        .unwrap_or_else(|_| panic!("the held request did not finish within {secs} s"))
        .expect("curl task")
}

/// curl's -D file holds the CONNECT answer first; the last block is the response.
fn last_header_block(dump: &str) -> Vec<(String, String)> {
    let blocks: Vec<&str> = dump
        .split("\r\n\r\n")
        .filter(|b| b.trim_start().starts_with("HTTP/"))
        .collect();
    blocks
        .last()
        .copied()
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}
