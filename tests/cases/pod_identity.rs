//! The pod as a caller (`[pod]`), without SPIFFE on the agent's side: AgentGate fetches the
//! workload's own JWT-SVID from the Workload API (`FetchJWTSVID`, for its audience) and
//! judges the pod's credential-less traffic as that identity; readiness waits for it.

use std::time::Duration;

use agentgate::identity::bundle::to_jwks;
use agentgate::identity::jwt::Es256Signer;
use serde_json::json;

use crate::support::proxy::toml_str;
use crate::support::raw;
use crate::support::workload::WorkloadApi;
use crate::support::{TestEnv, agent, audit_decisions};

const POD: &str = "spiffe://spire.test/ns/demo/sa/app";

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let mut s = raw::tcp(addr).await;
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let r = raw::exchange(&mut s, req.as_bytes()).await.expect("readyz");
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_requests_without_credentials_are_the_pods_workload_identity() {
    let env = TestEnv::new().await;
    let mut wl = WorkloadApi::start(env.dir.path()).await;
    let key =
        Es256Signer::from_pkcs8("spire-1".into(), &Es256Signer::generate_pkcs8().unwrap()).unwrap();
    let cfg = env
        .config()
        .set("identity", "workload_api", "true")
        .set("identity", "workload_api_socket", &toml_str(&wl.endpoint()))
        .set("pod", "loopback_is_pod", "true")
        .set("health", "listen", &toml_str("127.0.0.1:0"));
    let proxy = env.start(cfg);

    // Not ready: no bundles and no SVID yet (SPIRE has no entry for the workload).
    let (status, body) = readyz(proxy.admin_addr).await;
    assert_eq!(status, 503, "{body}");
    wl.set_bundles(json!({"spire.test": to_jwks([("spire-1", &key.public_key())])}))
        .await;
    let mut last = (0, String::new());
    for _ in 0..20 {
        last = readyz(proxy.admin_addr).await;
        if last.1.contains("pod's own identity") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 503, "ready without the pod's identity: {}", last.1);
    assert!(last.1.contains("pod's own identity"), "{}", last.1);

    // SPIRE issues it (for AgentGate's audience only): ready, and loopback traffic without
    // a credential is the pod's.
    let claims = json!({"sub": POD, "aud": ["agentgate"], "exp": agent::now() + 600});
    let token = key.sign(&claims).unwrap();
    wl.set_svid(json!({"spiffe_id": POD, "token": token, "audience": ["agentgate"]}))
        .await;
    let mut ready = false;
    for _ in 0..300 {
        if readyz(proxy.admin_addr).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "not ready 30 s after the SVID was issued: {}",
        proxy.stderr()
    );
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("-x")
        .arg(format!("http://{}", proxy.proxy_addr))
        .arg("--cacert")
        .arg(&proxy.ca_path)
        .arg("https://api.github.com/repos/acme/web")
        .output()
        .await
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");

    // A credential that is there is judged, never replaced by the pod's identity.
    let (_, refused) = raw::connect_as(
        proxy.proxy_addr,
        "api.github.com:443",
        Some("Bearer not.a.jwt"),
    )
    .await;
    assert_eq!(refused.status, 407, "{}", refused.text());

    let pods = |r: &serde_json::Value| r["agent"] == POD && r["path"] == "/repos/acme/web";
    let records = audit_decisions(&proxy, |rs| rs.iter().any(pods)).await;
    assert!(
        records.iter().any(pods),
        "no decision record for the pod's request: {records:?}"
    );
}
