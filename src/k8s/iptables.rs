//! `agentgate k8s iptables`: the rules an init container installs so that every outbound
//! TCP connection of the pod — except AgentGate's own, by UID — lands on the transparent
//! listener, and outbound UDP is dropped except DNS to the cluster's resolvers (QUIC and
//! other UDP cannot slip past the gates). Loopback stays untouched.
//!
//! The rules live in chains of their own (`AGENTGATE_OUTPUT` in `nat` and `filter`), fed
//! to `iptables-restore --noflush`: applying again replaces their contents and adds the
//! jump from `OUTPUT` only where it is missing, so the command is idempotent. IPv6 gets the
//! same rules; where the kernel has IPv6 and they cannot be installed, applying fails
//! rather than leave an IPv6 way out.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// The chain our rules live in, in both tables.
pub const CHAIN: &str = "AGENTGATE_OUTPUT";

/// What the rules need to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// AgentGate's UID: its own connections go out as they are.
    pub proxy_uid: u32,
    /// The transparent listener's port on loopback.
    pub port: u16,
    /// The cluster's DNS servers: TCP and UDP port 53 to them is not redirected.
    pub dns: Vec<IpAddr>,
}

/// Which iptables to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// nf_tables unless only legacy iptables already has rules (as an older kube-proxy).
    Auto,
    Nft,
    Legacy,
}

/// Why the rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(
        "no DNS server known: /etc/resolv.conf lists no nameserver; pass --dns with the cluster DNS address"
    )]
    NoDns,
    #[error(
        "cannot run {program}: {source}; install iptables (Debian: apt install iptables) in the init image"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "{program} failed ({status}): {stderr}; the init container needs NET_ADMIN and NET_RAW"
    )]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// The nameservers in a resolv.conf text.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        // A scoped IPv6 nameserver (fe80::1%eth0) is link-local: keep the address.
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .collect()
}

/// `iptables-restore` input for one address family (`v6` for ip6tables). `with_jumps`
/// adds the `-A OUTPUT -j AGENTGATE_OUTPUT` lines (left out where they already exist).
pub fn render(plan: &Plan, v6: bool, with_jumps: bool) -> String {
    let loopback = if v6 { "::1/128" } else { "127.0.0.0/8" };
    let dns: Vec<IpAddr> = plan
        .dns
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv6() == v6)
        .collect();
    let uid = plan.proxy_uid;
    let mut out = String::new();
    let _ = writeln!(out, "*nat\n:{CHAIN} - [0:0]");
    let _ = writeln!(out, "-A {CHAIN} -m owner --uid-owner {uid} -j RETURN");
    let _ = writeln!(out, "-A {CHAIN} -d {loopback} -j RETURN");
    for ip in &dns {
        let _ = writeln!(out, "-A {CHAIN} -d {ip} -p tcp --dport 53 -j RETURN");
    }
    let _ = writeln!(
        out,
        "-A {CHAIN} -p tcp -j REDIRECT --to-ports {}",
        plan.port
    );
    if with_jumps {
        let _ = writeln!(out, "-A OUTPUT -p tcp -j {CHAIN}");
    }
    let _ = writeln!(out, "COMMIT\n*filter\n:{CHAIN} - [0:0]");
    let _ = writeln!(out, "-A {CHAIN} -m owner --uid-owner {uid} -j RETURN");
    // By destination, not `-o lo`: the pod's own addresses route over lo as well.
    let _ = writeln!(out, "-A {CHAIN} -d {loopback} -j RETURN");
    for ip in &dns {
        let _ = writeln!(out, "-A {CHAIN} -d {ip} -p udp --dport 53 -j RETURN");
    }
    let _ = writeln!(out, "-A {CHAIN} -p udp -j DROP");
    if with_jumps {
        let _ = writeln!(out, "-A OUTPUT -p udp -j {CHAIN}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The programs of one backend, for one family.
fn programs(backend: Backend, v6: bool) -> (String, String) {
    let base = if v6 { "ip6tables" } else { "iptables" };
    let flavour = match backend {
        Backend::Legacy => "-legacy",
        Backend::Nft | Backend::Auto => "-nft",
    };
    (
        format!("{base}{flavour}"),
        format!("{base}{flavour}-restore"),
    )
}

/// Picks the backend for `Auto`: legacy only when it alone already holds rules.
pub fn resolve_backend(backend: Backend) -> Backend {
    if backend != Backend::Auto {
        return backend;
    }
    let has_rules = |program: &str| {
        Command::new(program)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("-A "))
            })
            .unwrap_or(false)
    };
    if has_rules("iptables-legacy-save") && !has_rules("iptables-nft-save") {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

/// Installs the rules for IPv4, and for IPv6 when the kernel has it; returns what was
/// applied, per family, for the log.
pub fn apply(plan: &Plan, backend: Backend) -> Result<Vec<(&'static str, String)>, IptablesError> {
    let backend = resolve_backend(backend);
    let mut applied = Vec::new();
    for v6 in [false, true] {
        if v6 && !Path::new("/proc/net/if_inet6").exists() {
            continue;
        }
        let (iptables, restore) = programs(backend, v6);
        // The jumps exist already when the chains are hooked in: add them only once.
        let hooked = ["nat", "filter"].iter().all(|table| {
            let proto = if *table == "nat" { "tcp" } else { "udp" };
            Command::new(&iptables)
                .args(["-w", "-t", table, "-C", "OUTPUT", "-p", proto, "-j", CHAIN])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        let rules = render(plan, v6, !hooked);
        run_restore(&restore, &rules)?;
        applied.push((if v6 { "ipv6" } else { "ipv4" }, rules));
    }
    Ok(applied)
}

fn run_restore(program: &str, rules: &str) -> Result<(), IptablesError> {
    let mut child = Command::new(program)
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IptablesError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(rules.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| IptablesError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(IptablesError::Failed {
        program: program.to_owned(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            proxy_uid: 65532,
            port: 15001,
            dns: vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()],
        }
    }

    #[test]
    fn reads_nameservers() {
        let conf = "search svc.cluster.local\nnameserver 10.96.0.10\n nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
        let ns = nameservers(conf);
        assert_eq!(
            ns,
            vec![
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn redirects_all_tcp_but_ours_loopback_and_dns_and_drops_other_udp() {
        let v4 = render(&plan(), false, true);
        let expected = "\
*nat
:AGENTGATE_OUTPUT - [0:0]
-A AGENTGATE_OUTPUT -m owner --uid-owner 65532 -j RETURN
-A AGENTGATE_OUTPUT -d 127.0.0.0/8 -j RETURN
-A AGENTGATE_OUTPUT -d 10.96.0.10 -p tcp --dport 53 -j RETURN
-A AGENTGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15001
-A OUTPUT -p tcp -j AGENTGATE_OUTPUT
COMMIT
*filter
:AGENTGATE_OUTPUT - [0:0]
-A AGENTGATE_OUTPUT -m owner --uid-owner 65532 -j RETURN
-A AGENTGATE_OUTPUT -d 127.0.0.0/8 -j RETURN
-A AGENTGATE_OUTPUT -d 10.96.0.10 -p udp --dport 53 -j RETURN
-A AGENTGATE_OUTPUT -p udp -j DROP
-A OUTPUT -p udp -j AGENTGATE_OUTPUT
COMMIT
";
        assert_eq!(v4, expected);
        let v6 = render(&plan(), true, false);
        assert!(v6.contains("-d ::1/128 -j RETURN"));
        assert!(v6.contains("-d fd00::a -p udp --dport 53 -j RETURN"));
        assert!(!v6.contains("10.96.0.10"));
        assert!(
            !v6.contains("-A OUTPUT"),
            "jumps left out when already hooked"
        );
    }
}
