//! The proxy under test as a child process: config rendering, start-up (waits
//! for the READY line), CLI invocations, and cleanup (kill on Drop, stderr shown
//! when the test failed).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentgate");
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A TOML config, section by section; values are raw TOML.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    sections: BTreeMap<String, BTreeMap<String, String>>,
    resolve: BTreeMap<String, SocketAddr>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    /// Both listeners on 127.0.0.1:0, JSON logs.
    pub fn new() -> Self {
        ConfigBuilder {
            sections: BTreeMap::new(),
            resolve: BTreeMap::new(),
        }
        .set("proxy", "listen", &toml_str("127.0.0.1:0"))
        .set("admin", "listen", &toml_str("127.0.0.1:0"))
        .set("log", "format", &toml_str("json"))
    }

    pub fn set(mut self, section: &str, key: &str, raw_toml: &str) -> Self {
        self.sections
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), raw_toml.to_owned());
        self
    }

    pub fn unset(mut self, section: &str, key: &str) -> Self {
        if let Some(s) = self.sections.get_mut(section) {
            s.remove(key);
        }
        self
    }

    /// `upstream.resolve["host:port"] = addr` (replaces an earlier entry).
    pub fn resolve(mut self, host_port: &str, addr: SocketAddr) -> Self {
        self.resolve.insert(host_port.to_owned(), addr);
        self
    }

    pub fn render(&self) -> String {
        let mut sections = self.sections.clone();
        if !self.resolve.is_empty() {
            let entries: Vec<String> = self
                .resolve
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(&v.to_string())))
                .collect();
            sections.entry("upstream".to_owned()).or_default().insert(
                "resolve".to_owned(),
                format!("{{ {} }}", entries.join(", ")),
            );
        }
        let mut out = String::new();
        for (name, keys) in &sections {
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        out
    }
}

/// A TOML basic string (JSON string syntax is valid TOML for what we write).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("quote string")
}

pub struct Proxy {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The CA path the READY line announced.
    pub ca_path: PathBuf,
    pub home: PathBuf,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    /// The test's judged-as-sent recorder, which holds this proxy's audit log.
    judged: Option<Arc<super::judged::Recorder>>,
}

pub enum Launch {
    Ready(Proxy),
    Exited { status: ExitStatus, stderr: String },
}

/// `agentgate run -c <config>` with `AGENTGATE_HOME=<home>` plus `envs`; waits for
/// READY or for the process to exit, whichever comes first.
pub fn launch(home: &Path, config: &Path, envs: &[(&str, &str)]) -> Launch {
    launch_in(&[], home, config, envs)
}

/// Like [`launch`], with the binary started through `wrapper` (e.g. `ip netns exec NS
/// setpriv --reuid ...`), which must pass the environment on.
pub fn launch_in(wrapper: &[&str], home: &Path, config: &Path, envs: &[(&str, &str)]) -> Launch {
    let config = config.to_string_lossy();
    let mut child = spawn(wrapper, home, &["run", "-c", &config], envs);
    let stderr_buf = Arc::new(Mutex::new(Vec::new()));
    let stderr_thread = drain(child.stderr.take().expect("stderr"), stderr_buf.clone());
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stdout_lines = Arc::new(Mutex::new(Vec::new()));
    let lines_sink = stdout_lines.clone();
    std::thread::spawn(move || {
        // Keep draining after READY so the proxy never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            lines_sink.lock().expect("stdout lines").push(line.clone());
            if line.starts_with("READY ") {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => {
            let (proxy_addr, admin_addr, ca_path) = parse_ready(&line);
            let judged = super::judged::register_proxy(home, Path::new(&*config));
            Launch::Ready(Proxy {
                proxy_addr,
                admin_addr,
                ca_path,
                home: home.to_owned(),
                child,
                stderr: stderr_buf,
                stdout_lines,
                judged,
            })
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().expect("wait for proxy");
            let _ = stderr_thread.join();
            let stderr = String::from_utf8_lossy(&stderr_buf.lock().expect("stderr")).into_owned();
            Launch::Exited { status, stderr }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = stderr_thread.join();
            let stderr = String::from_utf8_lossy(&stderr_buf.lock().expect("stderr")).into_owned();
            panic!("proxy printed no READY line within {READY_TIMEOUT:?}; stderr:\n{stderr}");
        }
    }
}

/// Like [`launch`], but the test needs a running proxy.
pub fn start(home: &Path, config: &Path, envs: &[(&str, &str)]) -> Proxy {
    match launch(home, config, envs) {
        Launch::Ready(p) => p,
        Launch::Exited { status, stderr } => {
            panic!("proxy exited before READY ({status}); stderr:\n{stderr}")
        }
    }
}

fn parse_ready(line: &str) -> (SocketAddr, SocketAddr, PathBuf) {
    let rest = line.strip_prefix("READY ").expect("READY prefix");
    let (addrs, ca) = rest
        .split_once(" ca=")
        .unwrap_or_else(|| panic!("READY line without ca=: {line:?}"));
    let mut proxy = None;
    let mut admin = None;
    for field in addrs.split_whitespace() {
        match field.split_once('=') {
            Some(("proxy", v)) => proxy = v.parse().ok(),
            Some(("admin", v)) => admin = v.parse().ok(),
            Some(("transparent" | "health", _)) => {}
            _ => panic!("unexpected field {field:?} in READY line {line:?}"),
        }
    }
    let proxy: SocketAddr = proxy.unwrap_or_else(|| panic!("no proxy= in {line:?}"));
    let admin: SocketAddr = admin.unwrap_or_else(|| panic!("no admin= in {line:?}"));
    assert!(
        proxy.ip().is_loopback() && admin.ip().is_loopback(),
        "{line}"
    );
    assert!(
        proxy.port() != 0 && admin.port() != 0,
        "READY shows port 0: {line}"
    );
    (proxy, admin, PathBuf::from(ca.trim()))
}

fn drain(mut src: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = src.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock()
                .expect("stderr buffer")
                .extend_from_slice(&chunk[..n]);
        }
    })
}

/// `agentgate` (through `wrapper`, if any) with a clean environment: no inherited
/// `AGENTGATE_*` settings.
fn base_command(wrapper: &[&str], home: &Path) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AGENTGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AGENTGATE_HOME", home).env("RUST_BACKTRACE", "1");
    cmd
}

/// Starts `agentgate ARGS` with piped output and no stdin.
pub fn spawn(
    wrapper: &[&str],
    home: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Child {
    let mut cmd = base_command(wrapper, home);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"))
}

/// Runs `agentgate ARGS` to completion (60 s bound) and returns its output.
pub fn cli(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    cli_in(&[], home, args, envs)
}

/// Like [`cli`], through `wrapper` (see [`launch_in`]).
pub fn cli_in(wrapper: &[&str], home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut child = spawn(wrapper, home, args, envs);
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let t_out = drain(child.stdout.take().expect("stdout"), out.clone());
    let t_err = drain(child.stderr.take().expect("stderr"), err.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`agentgate {}` did not exit within 60 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = t_out.join();
    let _ = t_err.join();
    let stdout = std::mem::take(&mut *out.lock().expect("stdout"));
    let stderr = std::mem::take(&mut *err.lock().expect("stderr"));
    Output {
        status,
        stdout,
        stderr,
    }
}

impl Proxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy URL with the test agent's credentials, as agents configure it.
    pub fn proxy_url(&self) -> String {
        format!(
            "http://{}:{}@{}",
            super::agent::NAME,
            super::agent::token(),
            self.proxy_addr
        )
    }

    /// The admin token the proxy wrote into its state dir.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.home.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned()
    }

    /// The proxy URL without credentials.
    pub fn anonymous_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// Everything the proxy printed on stdout so far, line by line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().expect("stdout lines").clone()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr")).into_owned()
    }

    /// A `/proc/<pid>/status` field in KiB (e.g. "VmRSS", "VmHWM").
    pub fn mem_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| {
                let v = l.strip_prefix(field)?.strip_prefix(':')?;
                v.trim().trim_end_matches("kB").trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Waits (bounded) for the proxy to exit on its own, e.g. after a signal.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("proxy did not exit within 30 s");
    }

    /// Stops the proxy and waits for it to exit.
    pub fn stop(self) {
        // Drop settles the audit log for the judged-as-sent check, then kills.
        drop(self);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Outcome records land just after responses: let them, before the kill, so the
        // judged-as-sent check (at the end of the test) finds them. Bounded; the verdict is
        // the check's.
        if !std::thread::panicking() {
            if let Some(j) = self.judged.as_ref().filter(|j| j.skipped().is_none()) {
                let _ = j.settle(Duration::from_secs(3));
            }
        }
        self.kill();
        if std::thread::panicking() {
            let err = self.stderr();
            let tail_start = err.len().saturating_sub(16 * 1024);
            let tail_start = (tail_start..err.len())
                .find(|i| err.is_char_boundary(*i))
                .unwrap_or(err.len());
            eprintln!(
                "---- agentgate stderr (pid {}, last 16 KiB) ----\n{}\n---- end of agentgate stderr ----",
                self.pid(),
                &err[tail_start..]
            );
        }
    }
}
