//! Gate 1 — identity: the built-in issuer through the real CLI (`agents register`,
//! `exec`, `revoke`, `identity rotate`), real clients carrying the credentials from the
//! proxy URL, and forged or broken tokens refused with a reason while the proxy keeps
//! serving.

use std::process::Output;

use serde_json::{Value, json};

use crate::support::cli::ok;
use crate::support::proxy::Proxy;
use crate::support::raw::{self, RawResponse};
use crate::support::upstream::GIT_HEAD;
use crate::support::{TestEnv, agent, assert_denied, assert_serves};

/// `agentgate ARGS` against the proxy's state dir, off the async workers.
async fn agentgate(proxy: &Proxy, args: &[&str], envs: &[(&str, &str)]) -> Output {
    crate::support::cli::agentgate(&proxy.home, args, envs).await
}

/// Registers `name` and returns the `-o json` document.
async fn register(proxy: &Proxy, name: &str) -> Value {
    let out = agentgate(
        proxy,
        &["agents", "register", name, "--owner", "alice", "-o", "json"],
        &[],
    )
    .await;
    serde_json::from_str(&ok(&out, "agents register")).expect("register -o json")
}

async fn connect_with(proxy: &Proxy, auth: Option<&str>) -> RawResponse {
    raw::connect_as(proxy.proxy_addr, "api.github.com:443", auth)
        .await
        .1
}

fn python() -> String {
    std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_curl_python_node_and_git_through_the_gate() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let reg = register(&proxy, "bot").await;
    assert_eq!(reg["spiffe_id"], "spiffe://agentgate.local/agent/bot");
    assert_eq!(reg["owner"], "alice");
    let url = reg["proxy_url"].as_str().expect("proxy_url");
    assert!(
        url.starts_with("http://bot:ey") && url.ends_with(&proxy.proxy_addr.to_string()),
        "{url}"
    );

    let curl = agentgate(
        &proxy,
        &[
            "exec",
            "--agent",
            "bot",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "60",
            "https://api.github.com/echo?via=curl",
        ],
        &[],
    )
    .await;
    let body: Value = serde_json::from_str(&ok(&curl, "exec curl")).expect("echo JSON");
    assert_eq!(body["query"], "via=curl");

    let py = python();
    let script = "import requests; r = requests.get('https://api.github.com/echo?via=requests', timeout=60); print(r.status_code, r.json()['query'])";
    let out = agentgate(
        &proxy,
        &["exec", "--agent", "bot", "--", &py, "-c", script],
        &[],
    )
    .await;
    assert_eq!(ok(&out, "exec python requests").trim(), "200 via=requests");

    // Node 20 ignores NODE_USE_ENV_PROXY (22.21+/24.5+ honour it); undici's
    // EnvHttpProxyAgent reads the same HTTPS_PROXY, and NODE_EXTRA_CA_CERTS the CA.
    let clients = crate::support::clients::clients_dir();
    let script = "const u = require('undici'); u.setGlobalDispatcher(new u.EnvHttpProxyAgent()); \
        fetch('https://api.github.com/echo?via=node').then(async r => console.log(r.status, (await r.json()).query)) \
        .catch(e => { console.error(e, e.cause); process.exit(1); });";
    let node_path = clients.join("node_modules").display().to_string();
    let out = agentgate(
        &proxy,
        &["exec", "--agent", "bot", "--", "node", "-e", script],
        &[("NODE_PATH", node_path.as_str())],
    )
    .await;
    assert_eq!(ok(&out, "exec node fetch").trim(), "200 via=node");

    let out = agentgate(
        &proxy,
        &[
            "exec",
            "--agent",
            "bot",
            "--",
            "git",
            "ls-remote",
            "https://api.github.com/repo.git",
        ],
        &[
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("HOME", "/nonexistent"),
        ],
    )
    .await;
    let refs = ok(&out, "exec git ls-remote");
    assert!(refs.contains(&format!("{GIT_HEAD}\tHEAD")), "{refs}");
    assert!(
        refs.contains(&format!("{GIT_HEAD}\trefs/heads/main")),
        "{refs}"
    );

    // The exit code is the command's.
    let out = agentgate(
        &proxy,
        &["exec", "--agent", "bot", "--", "sh", "-c", "exit 7"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(7));

    // The log names the caller, never the token.
    let log = proxy.stderr();
    assert!(log.contains("spiffe://agentgate.local/agent/bot"), "{log}");
    let token = reg["token"].as_str().unwrap();
    assert!(
        !log.contains(&token[token.len() - 20..]),
        "token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_prints_every_variable() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    register(&proxy, "bot").await;
    let out = agentgate(&proxy, &["env", "--agent", "bot", "-o", "json"], &[]).await;
    let vars: Value = serde_json::from_str(&ok(&out, "env -o json")).unwrap();
    let bundle = proxy.home.join("ca-bundle.pem").display().to_string();
    for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        let v = vars[k].as_str().unwrap_or_default();
        assert!(
            v.starts_with("http://bot:") && v.ends_with(&proxy.proxy_addr.to_string()),
            "{k}={v}"
        );
    }
    assert_eq!(vars["NO_PROXY"], "localhost,127.0.0.1,::1");
    assert_eq!(vars["NODE_USE_ENV_PROXY"], "1");
    for k in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
    ] {
        assert_eq!(vars[k], bundle.as_str(), "{k}");
    }
    let pem = std::fs::read_to_string(&bundle).unwrap();
    let ca = std::fs::read_to_string(&proxy.ca_path).unwrap();
    assert!(pem.contains(ca.trim()), "bundle lacks our CA");
    assert!(
        pem.matches("BEGIN CERTIFICATE").count() > 1,
        "bundle lacks system roots"
    );

    let out = agentgate(&proxy, &["env", "--agent", "bot"], &[]).await;
    let sh = ok(&out, "env");
    assert!(sh.contains("export HTTPS_PROXY='http://bot:"), "{sh}");
    let out = agentgate(&proxy, &["env", "--agent", "nobody"], &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agents list"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_get_407_with_a_challenge() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let resp = connect_with(&proxy, None).await;
    let body = assert_denied(&resp, 407, "identity");
    assert_eq!(body["error"], "proxy_auth_required");
    assert_eq!(
        resp.header("proxy-authenticate"),
        Some(r#"Basic realm="agentgate""#)
    );
    // Plain http:// too.
    let mut s = raw::tcp(proxy.proxy_addr).await;
    let req = b"GET http://api.github.com/echo HTTP/1.1\r\nHost: api.github.com\r\n\r\n";
    let resp = raw::exchange(&mut s, req).await.expect("answer");
    assert_denied(&resp, 407, "identity");
    // A real client with no credentials.
    let mut cmd = crate::support::clients::clean_command("curl");
    cmd.args(["-sS", "-x", &proxy.anonymous_url(), "--cacert"])
        .arg(&proxy.ca_path)
        .arg("https://api.github.com/echo");
    let out = crate::support::clients::output(cmd, "curl").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("407"));
    assert!(
        !env.upstream.saw("GET /echo"),
        "anonymous request reached upstream"
    );
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_on_the_running_proxy_takes_effect_at_once() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let first = register(&proxy, "bot").await;
    let token = first["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let (s, head) = raw::connect_as(proxy.proxy_addr, "api.github.com:443", Some(&bearer)).await;
    assert_eq!(head.status, 200, "{}", head.text());
    let tls = raw::tls_over(s, "api.github.com", &proxy.ca_path, &[b"http/1.1"]).await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(&mut h1, raw::get("/echo?n=1", "api.github.com")).await;
    assert_eq!(resp.status, 200);

    // Proxy variables pointing nowhere must not matter: the CLI talks to the admin port.
    let dead = "http://127.0.0.1:9";
    let out = agentgate(
        &proxy,
        &["agents", "revoke", "bot"],
        &[
            ("HTTPS_PROXY", dead),
            ("HTTP_PROXY", dead),
            ("ALL_PROXY", dead),
            ("http_proxy", dead),
        ],
    )
    .await;
    ok(&out, "agents revoke");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refuses it now"));

    // The very next request on the open tunnel is refused, and so is a new tunnel.
    let resp = raw::send_h1(&mut h1, raw::get("/echo?n=2", "api.github.com")).await;
    let body = assert_denied(&resp, 403, "identity");
    assert_eq!(body["error"], "identity_revoked");
    assert!(!env.upstream.saw("n=2"));
    let resp = connect_with(&proxy, Some(&bearer)).await;
    assert_denied(&resp, 403, "identity");

    // Re-registering issues a new token; the old one stays dead.
    let second = register(&proxy, "bot").await;
    let new_bearer = format!("Bearer {}", second["token"].as_str().unwrap());
    assert_eq!(connect_with(&proxy, Some(&new_bearer)).await.status, 200);
    assert_denied(&connect_with(&proxy, Some(&bearer)).await, 403, "identity");

    // One token alone, by jti.
    let jti = second["jti"].as_str().unwrap();
    ok(
        &agentgate(&proxy, &["agents", "revoke", "bot", "--jti", jti], &[]).await,
        "revoke --jti",
    );
    let body = assert_denied(
        &connect_with(&proxy, Some(&new_bearer)).await,
        403,
        "identity",
    );
    assert!(body["reason"].as_str().unwrap().contains(jti), "{body}");

    let list = ok(
        &agentgate(&proxy, &["agents", "list", "-o", "json"], &[]).await,
        "agents list",
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["name"], "bot");
    assert_eq!(list[0]["active_tokens"], 0);
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_serves_both_keys_and_keeps_old_tokens_valid() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let old = register(&proxy, "bot").await;
    let bundle = |p: &Proxy| {
        let addr = p.admin_addr;
        async move {
            let mut s = raw::tcp(addr).await;
            let req = format!(
                "GET /.well-known/spiffe-bundle HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            raw::exchange(&mut s, req.as_bytes())
                .await
                .expect("bundle")
                .json()
        }
    };
    let before = bundle(&proxy).await;
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);
    assert_eq!(before["keys"][0]["use"], "jwt-svid");
    assert_eq!(before["keys"][0]["alg"], Value::Null);
    assert!(
        before["keys"][0].get("d").is_none(),
        "private key material served"
    );

    let out = agentgate(&proxy, &["identity", "rotate"], &[]).await;
    assert!(ok(&out, "identity rotate").contains("retired key"));
    let new = register(&proxy, "bot").await;
    let after = bundle(&proxy).await;
    assert_eq!(after["keys"].as_array().unwrap().len(), 2, "{after}");
    for reg in [&old, &new] {
        let bearer = format!("Bearer {}", reg["token"].as_str().unwrap());
        assert_eq!(connect_with(&proxy, Some(&bearer)).await.status, 200);
    }
    let key_dir = proxy.home.join("identity");
    for entry in std::fs::read_dir(&key_dir).unwrap() {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &entry.unwrap().metadata().unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// Every bad token of the issue's list: a 407 (or 403) with a reason naming the problem,
/// a log line, no token echoed, and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_tokens_are_refused_with_reasons() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let good = agent::claims("forger");
    let header = json!({"alg": "ES256", "kid": agent::KID, "typ": "JWT"});
    let with_claims = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        agent::mint(&header, &c)
    };
    let with_header = |f: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        f(&mut h);
        agent::mint(&h, &good)
    };
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let valid = agent::mint(&header, &good);
    let parts: Vec<&str> = valid.split('.').collect();
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": agent::KID})),
        parts[1]
    );
    let hs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "HS256", "kid": agent::KID})),
        parts[1],
        parts[2]
    );
    let basic_bad = "Basic !!not-base64!!".to_owned();
    let basic_nocolon = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("just-a-name")
        )
    };
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("alg none", none, "algorithm \"none\""),
        ("HS256", hs256, "algorithm \"HS256\""),
        (
            "unknown kid",
            with_header(&|h| h["kid"] = json!("nope")),
            "signing key \"nope\" is unknown",
        ),
        (
            "expired",
            with_claims(&|c| c["exp"] = json!(agent::now() - 3600)),
            "expired",
        ),
        (
            "nbf in future",
            with_claims(&|c| c["nbf"] = json!(agent::now() + 3600)),
            "not valid for another",
        ),
        (
            "wrong aud",
            with_claims(&|c| c["aud"] = json!(["someone-else"])),
            "audience",
        ),
        (
            "missing aud",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "no \"aud\"",
        ),
        (
            "sub not spiffe",
            with_claims(&|c| c["sub"] = json!("forger")),
            "not a valid SPIFFE ID",
        ),
        (
            "untrusted domain",
            with_claims(&|c| c["sub"] = json!("spiffe://evil.example/agent/x")),
            "not trusted",
        ),
        (
            "bad signature",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(
                    &json!({"sub": "spiffe://e2e.test/agent/admin", "aud": "agentgate", "exp": agent::now() + 60})
                ),
                parts[2]
            ),
            "signature is invalid",
        ),
        (
            "truncated",
            valid[..valid.len() - 10].to_owned(),
            "signature",
        ),
        ("garbage", "garbage".to_owned(), "compact form"),
        (
            "oversize",
            format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]),
            "larger than",
        ),
    ];
    for field in ["jku", "x5u", "jwk", "x5c", "crit"] {
        cases.push((
            field,
            with_header(&|h| h[field] = json!("https://evil.example/jwks")),
            "not allowed",
        ));
    }
    let mut failures = Vec::new();
    for (name, token, want) in &cases {
        let resp = connect_with(&proxy, Some(&format!("Bearer {token}"))).await;
        if resp.status != 407 {
            failures.push(format!("{name}: status {} {}", resp.status, resp.text()));
            continue;
        }
        let body = assert_denied(&resp, 407, "identity");
        let reason = body["reason"].as_str().unwrap_or_default();
        if !reason.contains(want) {
            failures.push(format!("{name}: reason {reason:?} lacks {want:?}"));
        }
        if token.len() > 20 && resp.text().contains(&token[token.len() - 20..]) {
            failures.push(format!("{name}: token echoed"));
        }
    }
    for (name, auth) in [
        ("Basic not base64", basic_bad),
        ("Basic without colon", basic_nocolon),
    ] {
        let resp = connect_with(&proxy, Some(&auth)).await;
        if resp.status != 407 {
            failures.push(format!("{name}: status {}", resp.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Each refusal is a log line with its reason.
    let log = proxy.stderr();
    let refusals = log.matches(r#""denied_by":"identity""#).count();
    assert!(
        refusals >= cases.len(),
        "{refusals} identity refusals logged:\n{log}"
    );
    assert!(
        log.contains(r#"token algorithm \"none\" is not allowed"#),
        "{log}"
    );
    assert!(
        !env.upstream.saw("GET"),
        "a refused request reached the upstream"
    );
    assert_serves(&proxy).await;
}

/// A SPIFFE Workload API (real gRPC) streams the bundle of another trust domain; the proxy
/// trusts it, follows a key rotation without restart, and drops the retired key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_bundles_are_trusted_and_followed() {
    use agentgate::identity::bundle::to_jwks;
    use agentgate::identity::jwt::Es256Signer;
    let env = TestEnv::new().await;
    let mut wl = crate::support::workload::WorkloadApi::start(env.dir.path()).await;
    let key = |kid: &str| {
        Es256Signer::from_pkcs8(kid.into(), &Es256Signer::generate_pkcs8().unwrap()).unwrap()
    };
    let (k1, k2) = (key("spire-1"), key("spire-2"));
    let cfg = env.config().set("identity", "workload_api", "true").set(
        "identity",
        "workload_api_socket",
        &crate::support::proxy::toml_str(&wl.endpoint()),
    );
    let proxy = env.start(cfg);
    // Not ready until the first bundles arrive: a sidecar's readiness probe waits.
    let readyz = |addr: std::net::SocketAddr| async move {
        let mut s = raw::tcp(addr).await;
        let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        raw::exchange(&mut s, req.as_bytes()).await.expect("readyz")
    };
    let before = readyz(proxy.admin_addr).await;
    assert_eq!(before.status, 503, "{}", before.text());
    assert!(before.text().contains("Workload API"), "{}", before.text());
    wl.set_bundles(json!({"spire.test": to_jwks([("spire-1", &k1.public_key())])}))
        .await;
    wait_for(
        "ready after the first bundles",
        || async { readyz(proxy.admin_addr).await.status },
        200,
    )
    .await;
    let claims = json!({"sub": "spiffe://spire.test/ns/prod/sa/agent", "aud": "agentgate", "exp": agent::now() + 600});
    let t1 = format!("Bearer {}", k1.sign(&claims).unwrap());
    let t2 = format!("Bearer {}", k2.sign(&claims).unwrap());
    let status_of = |auth: String| {
        let addr = proxy.proxy_addr;
        async move {
            raw::connect_as(addr, "api.github.com:443", Some(&auth))
                .await
                .1
                .status
        }
    };
    wait_for("spire-1 trusted", || status_of(t1.clone()), 200).await;
    assert_eq!(status_of(t2.clone()).await, 407);

    let streams = wl
        .set_bundles(json!({"spire.test": to_jwks([("spire-2", &k2.public_key())])}))
        .await;
    assert!(streams >= 1, "the proxy holds no FetchJWTBundles stream");
    wait_for("spire-2 trusted", || status_of(t2.clone()), 200).await;
    assert_eq!(
        status_of(t1.clone()).await,
        407,
        "retired key still trusted"
    );
    assert!(proxy.stderr().contains("Workload API bundles updated"));
    assert_serves(&proxy).await;
}

async fn wait_for<F, Fut>(what: &str, mut probe: F, want: u16)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut last = 0;
    for _ in 0..100 {
        last = probe().await;
        if last == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: still {last} after 10 s, want {want}");
}

/// AgentGate may itself run inside an `exec`ed shell: proxy variables in its own
/// environment must not send its upstream traffic anywhere but the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_ignores_proxy_variables_in_its_own_environment() {
    let env = TestEnv::new().await;
    let dead = "http://127.0.0.1:9";
    let vars = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    let envs: Vec<(&str, &str)> = vars.iter().map(|v| (*v, dead)).collect();
    let proxy = env.start_with_env(env.config(), &envs);
    assert_serves(&proxy).await;
    let curl = crate::support::clients::curl(&proxy, &["https://slack.com/echo?env=proxied"]).await;
    assert_eq!(curl.status, 200);
    assert_eq!(curl.json()["query"], "env=proxied");
}

/// The agent's proxy credential authenticates it to AgentGate and goes no further: a plain
/// http:// request (credential on every request, Basic as curl sends it) and a request in a
/// tunnel that also carries one both reach the upstream without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_credential_never_reaches_the_upstream() {
    use crate::support::upstream::{Mode, Upstream};
    let env = TestEnv::new().await;
    let plain = Upstream::start(Vec::new(), Mode::Plain).await;
    let cfg = env
        .config()
        .set("egress", "allow_ports", "[443, 80]")
        .resolve("api.github.com:80", plain.addr);
    let proxy = env.start(cfg);
    let mut cmd = crate::support::clients::clean_command("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-x",
        &proxy.proxy_url(),
        "http://api.github.com/echo?plain=1",
    ]);
    let out = crate::support::clients::output(cmd, "curl http://").await;
    let body: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(body["query"], "plain=1");
    let seen = body["headers"].to_string().to_ascii_lowercase();
    assert!(!seen.contains("proxy-authorization"), "{seen}");
    assert!(
        !seen.contains(&agent::token()[..40].to_ascii_lowercase()),
        "token forwarded"
    );

    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let mut req = raw::get("/echo?tunnel=1", "api.github.com");
    req.headers_mut()
        .insert("proxy-authorization", agent::bearer().parse().unwrap());
    let resp = raw::send_h1(&mut h1, req).await;
    assert_eq!(resp.status, 200);
    let seen = resp.json()["headers"].to_string().to_ascii_lowercase();
    assert!(!seen.contains("proxy-authorization"), "{seen}");
}
