//! The SPIFFE Workload API test server (`tests/support/workload_api.py`)
//! against the spiffe crate's real client: bundles arrive, rotations are
//! streamed, and calls without the security header are refused like SPIRE does.

use crate::support::workload::{EcKey, WorkloadApi, jwks};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use spiffe::transport::{GrpcStatusCode, TransportError};
use spiffe::{JwtBundleSet, TrustDomain, WorkloadApiClient, WorkloadApiError};
use std::time::Duration;

const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("agentgate-e2e-")
        .tempdir()
        .expect("tempdir")
}

/// The spiffe crate's client on `wl`, with its `FetchJWTBundles` stream open.
async fn open_stream(
    wl: &WorkloadApi,
) -> (
    WorkloadApiClient,
    impl Stream<Item = Result<JwtBundleSet, WorkloadApiError>> + Unpin + use<>,
) {
    let endpoint = wl.endpoint();
    let client = tokio::time::timeout(STREAM_TIMEOUT, WorkloadApiClient::connect_to(&endpoint))
        .await
        .unwrap_or_else(|_| panic!("connect to {endpoint} timed out"))
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
    let stream = tokio::time::timeout(STREAM_TIMEOUT, client.stream_jwt_bundles())
        .await
        .expect("stream_jwt_bundles timed out (no response headers)")
        .expect("stream_jwt_bundles");
    (client, stream)
}

async fn next_set<S>(stream: &mut S, what: &str) -> JwtBundleSet
where
    S: Stream<Item = Result<JwtBundleSet, WorkloadApiError>> + Unpin,
{
    tokio::time::timeout(STREAM_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no JWT bundle set within {STREAM_TIMEOUT:?}"))
        .unwrap_or_else(|| panic!("{what}: stream ended"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn kids(set: &JwtBundleSet, td: &TrustDomain) -> Vec<String> {
    let bundle = set
        .get(td)
        .unwrap_or_else(|| panic!("no bundle for {td} in {set:?}"));
    let mut kids: Vec<String> = bundle
        .jwt_authorities()
        .map(|a| a.key_id().to_owned())
        .collect();
    kids.sort();
    kids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_streams_jwt_bundles_to_spiffe_client() {
    let dir = tempdir();
    let mut wl = WorkloadApi::start(dir.path()).await;
    let td = TrustDomain::new("example.org").expect("trust domain");

    let k1 = EcKey::generate("k1");
    assert_eq!(
        wl.set_bundles(json!({ "example.org": jwks(&[&k1]) })).await,
        0,
        "no stream is open yet"
    );

    let (client, mut stream) = open_stream(&wl).await;

    let first = next_set(&mut stream, "initial bundles").await;
    assert_eq!(first.len(), 1, "one trust domain: {first:?}");
    assert_eq!(kids(&first, &td), ["k1"]);
    let bundle = first.get(&td).expect("example.org bundle");
    let authority = bundle.find_jwt_authority("k1").expect("authority k1");
    let jwk: Value = serde_json::from_slice(authority.jwk_json()).expect("k1 JWK is JSON");
    assert_eq!(jwk, k1.jwk(), "the JWK arrives unchanged");
    assert!(bundle.find_jwt_authority("k2").is_none());

    // Rotation: k2 added next to k1, pushed to the open stream.
    let k2 = EcKey::generate("k2");
    let open = wl
        .set_bundles(json!({ "example.org": jwks(&[&k1, &k2]) }))
        .await;
    assert!(
        open >= 1,
        "the spiffe client's stream should be open, got {open}"
    );
    let rotated = next_set(&mut stream, "rotated bundles").await;
    assert_eq!(kids(&rotated, &td), ["k1", "k2"]);
    let k2_jwk: Value = serde_json::from_slice(
        rotated
            .get(&td)
            .and_then(|b| b.find_jwt_authority("k2").cloned())
            .expect("authority k2")
            .jwk_json(),
    )
    .expect("k2 JWK is JSON");
    assert_eq!(k2_jwk, k2.jwk());

    // A second trust domain arrives alongside; k1 is retired.
    let other = TrustDomain::new("other.example").expect("trust domain");
    let k3 = EcKey::generate("k3");
    wl.set_bundles(json!({ "example.org": jwks(&[&k2]), "other.example": jwks(&[&k3]) }))
        .await;
    let both = next_set(&mut stream, "two trust domains").await;
    assert_eq!(kids(&both, &td), ["k2"]);
    assert_eq!(kids(&both, &other), ["k3"]);

    // One-shot fetch sees the current set too (and opens/closes its own stream).
    let fetched = tokio::time::timeout(STREAM_TIMEOUT, client.fetch_jwt_bundles())
        .await
        .expect("fetch_jwt_bundles timed out")
        .expect("fetch_jwt_bundles");
    assert_eq!(fetched, both);

    // The server notices when the client goes away.
    drop(stream);
    drop(client);
    let deadline = tokio::time::Instant::now() + STREAM_TIMEOUT;
    loop {
        let open = wl.set_bundles(json!({ "example.org": jwks(&[&k2]) })).await;
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} stream(s) still open after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_stream_waits_for_first_bundles_and_ends_on_stop() {
    let dir = tempdir();
    let mut wl = WorkloadApi::start(dir.path()).await;
    let td = TrustDomain::new("example.org").expect("trust domain");

    // Connected before any bundle set exists: the stream waits for the first.
    let (_client, mut stream) = open_stream(&wl).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "nothing should arrive before bundles are set"
    );
    let k1 = EcKey::generate("k1");
    assert_eq!(
        wl.set_bundles(json!({ "example.org": jwks(&[&k1]) })).await,
        1
    );
    assert_eq!(
        kids(&next_set(&mut stream, "first bundles").await, &td),
        ["k1"]
    );

    // Stopping the server cancels the open stream promptly (UNAVAILABLE, like
    // a SPIRE agent going away) rather than hanging it or ending it cleanly.
    let status = wl.stop().await;
    assert!(status.success(), "workload_api.py exit: {status}");
    let end = tokio::time::timeout(STREAM_TIMEOUT, stream.next())
        .await
        .expect("stream did not end after the server stopped");
    // UNAVAILABLE when the server's cancel reaches the client first; on a loaded machine
    // the process may be gone before that frame is flushed, and the client sees the
    // connection break instead (an h2 error, "Unknown"). Either is an error, not a hang
    // and not a clean end.
    match end {
        Some(Err(WorkloadApiError::Transport(TransportError::Status(s))))
            if s.code() == GrpcStatusCode::Unavailable
                || (s.code() == GrpcStatusCode::Unknown && s.message().contains("h2")) => {}
        other => panic!(
            "expected UNAVAILABLE (or the connection broken) after the server stopped, got {other:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_refuses_calls_without_security_header() {
    let dir = tempdir();
    let mut wl = WorkloadApi::start(dir.path()).await;
    let k1 = EcKey::generate("k1");
    wl.set_bundles(json!({ "example.org": jwks(&[&k1]) })).await;

    let refused = wl.probe(false).await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["code"], "INVALID_ARGUMENT", "{refused}");
    assert_eq!(
        refused["details"], "security header missing from request",
        "{refused}"
    );

    let served = wl.probe(true).await;
    assert_eq!(served["ok"], true, "{served}");
    assert_eq!(served["bundles"]["example.org"], jwks(&[&k1]), "{served}");
}
