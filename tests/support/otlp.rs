//! A real OpenTelemetry OTLP receiver (`tests/support/otlp_receiver.py`: the official
//! `opentelemetry-proto` messages and services, served with grpcio and Python's http.server)
//! standing in for a collector: OTLP/gRPC and OTLP/HTTP protobuf, logs and traces, on free
//! loopback ports. Every log record and span it accepts becomes one JSON line in a file the test
//! reads (the shape is in the script's doc); `--delay-ms N` and `--fail-first N` make it slow or
//! failing. scripts/test installs grpcio and opentelemetry-proto in target/e2e-venv.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: importing grpcio and the protobuf modules is slow on a busy 2-core box.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py")
}

/// The Python interpreter: `AGENTGATE_TEST_PYTHON` (scripts/test points it at
/// target/e2e-venv, which has grpcio and opentelemetry-proto) or `python3`.
fn python() -> String {
    std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A running `otlp_receiver.py`; killed on drop.
pub struct Otlp {
    /// OTLP/gRPC (`LogsService/Export`, `TraceService/Export`).
    pub grpc: SocketAddr,
    /// OTLP/HTTP protobuf (`POST /v1/logs`, `POST /v1/traces`) and `GET /status`.
    pub http: SocketAddr,
    /// The JSON-lines file every accepted log record and span is appended to.
    pub out: PathBuf,
    child: Child,
    /// Held open: the receiver also exits when its stdin closes, so it does not outlive a test
    /// process that dies without running `Drop`.
    _stdin: ChildStdin,
}

impl Otlp {
    /// Starts a receiver writing to a fresh file under `dir`, with extra flags `args` (e.g.
    /// `["--fail-first", "2"]`, `["--delay-ms", "500"]`), and waits for its READY line.
    pub fn start(dir: &Path, args: &[&str]) -> Otlp {
        // Several receivers may share a test's dir.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let out = std::path::absolute(dir.join(format!(
            "otlp-{}.jsonl",
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
        .expect("absolute OTLP output path");
        let python = python();
        let mut child = Command::new(&python)
            .arg(script())
            .arg("--out")
            .arg(&out)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "otlp_receiver.py: cannot start {python} ({e}); run scripts/test \
                     (installs grpcio and opentelemetry-proto in target/e2e-venv)"
                )
            });
        let stdin = child.stdin.take().expect("otlp_receiver.py stdin");
        let stdout = child.stdout.take().expect("otlp_receiver.py stdout");
        // A std pipe has no read timeout: a thread reads the READY line, then drains stdout.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            lines.map_while(Result::ok).for_each(drop);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("otlp_receiver.py: no READY within {START_TIMEOUT:?}");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("otlp_receiver.py exit status");
                panic!(
                    "otlp_receiver.py exited before READY ({status}); see its stderr above. \
                     Does {python} have grpcio and opentelemetry-proto? Run scripts/test (it \
                     installs them in target/e2e-venv) or set AGENTGATE_TEST_PYTHON"
                );
            }
        };
        // READY grpc=127.0.0.1:PORT http=127.0.0.1:PORT
        let addr = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
        };
        let (Some(grpc), Some(http)) = (addr("grpc="), addr("http=")) else {
            let _ = child.kill();
            panic!("otlp_receiver.py: expected `READY grpc=.. http=..`, got {line:?}");
        };
        Otlp {
            grpc,
            http,
            out,
            child,
            _stdin: stdin,
        }
    }

    /// `http://127.0.0.1:PORT`, the OTLP/gRPC endpoint.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:PORT`, the OTLP/HTTP base; the signals are at `/v1/logs` and
    /// `/v1/traces` under it.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every log record and span received so far, in arrival order.
    pub fn records(&self) -> Vec<Value> {
        let text = match std::fs::read_to_string(&self.out) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("read {}: {e}", self.out.display()),
        };
        // Whole lines only: the line being appended right now may be cut.
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        whole
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: bad JSON line ({e}): {l}", self.out.display()))
            })
            .collect()
    }

    /// Polls [`records`](Self::records) until `pred` holds, for up to `timeout`; panics naming
    /// `what` (and showing the last records) if it never does.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            if pred(&records) {
                return records;
            }
            if Instant::now() >= deadline {
                let last: Vec<String> = records
                    .iter()
                    .rev()
                    .take(20)
                    .rev()
                    .map(|r| r.to_string())
                    .collect();
                let status = self.try_status().unwrap_or_else(Value::String);
                panic!(
                    "OTLP receiver: waited {timeout:?} for {what} in vain; status {status}; \
                     {} record(s), the last:\n{}",
                    records.len(),
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /status`: `{"grpc_calls", "http_calls", "failed", "bad_requests", "records"}`
    /// (export calls per transport including failed ones, calls failed on purpose, undecodable
    /// HTTP bodies, records written).
    pub fn status(&self) -> Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("OTLP receiver /status: {e}"))
    }

    /// A one-shot HTTP/1.0 exchange: the test crate has no plain HTTP client.
    fn try_status(&self) -> Result<Value, String> {
        let mut conn = std::net::TcpStream::connect(self.http).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        conn.write_all(b"GET /status HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        let (_, body) = resp
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no body in {resp:?}"))?;
        serde_json::from_str(body).map_err(|e| format!("bad JSON ({e}): {body:?}"))
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
