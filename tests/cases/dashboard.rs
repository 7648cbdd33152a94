//! The dashboard in a real browser: headless Chromium (Debian `chromium`, installed by
//! scripts/test) driven by `tests/support/dashboard.mjs` (playwright-core), step by step,
//! while this test sends real requests through the proxy with `curl`. Without a token the
//! page shows only the sign-in form and no API call succeeds; a wrong pasted token is
//! refused; the one-time link signs in (its code leaves the address bar; the session lives
//! in `sessionStorage`, no cookie) and the live stream connects. A read shows up as an
//! allowed decision row (latency joined from its outcome) whose audit record opens with
//! Enter; a held write shows up as a pending consent, and its Approve button releases the
//! held request, which reaches the upstream once. PANIC from the dialog cuts the agent off:
//! its next request is refused and the agents panel shows it revoked. Any console error or
//! uncaught page error (CSP violations included) fails the test. Screenshots of each step
//! land in `target/dashboard-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::support::cli::{Registered, ok, register};
use crate::support::clients::{clean_command, clients_dir, output};
use crate::support::held::{self, finish};
use crate::support::proxy::{Proxy, toml_str};
use crate::support::raw::RawResponse;
use crate::support::{TestEnv, audit_decisions, read_records};

/// A read the shipped policy allows, and its action.
const READ_URL: &str = "https://api.github.com/repos/acme/web/issues";
const READ_ACTION: &str = "github.issues.list-for-repo";
/// A write the shipped policy escalates, and its action.
const WRITE_URL: &str = "https://api.github.com/repos/acme/web/issues";
const WRITE_PATH: &str = "/repos/acme/web/issues";
const WRITE_ACTION: &str = "github.issues.create";
/// One browser step, however slow the machine (each locator inside waits ≤ 15 s).
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium binary: `$CHROMIUM` or Debian's `/usr/bin/chromium`. Missing → the test
/// fails (it must not pass without having run the browser).
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium is not installed at {} (set CHROMIUM to another binary); run scripts/test, \
         which installs Debian's `chromium` package",
        path.display()
    );
    assert!(
        clients_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in tests/clients/node_modules; run scripts/test \
         (or `npm ci` in tests/clients)"
    );
    path
}

/// `<crate>/target/dashboard-screenshots`. Pictures are overwritten, not wiped first: other
/// runs of the suite (other target dirs) may be writing there at the same time. Only an
/// earlier run's failure pictures are removed.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/dashboard-screenshots");
    for entry in std::fs::read_dir(&dir)
        .expect("read screenshot dir")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("failed-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    dir
}

/// `tests/support/dashboard.mjs`: a headless Chromium page driven one command at a time.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    n: u64,
}

impl Browser {
    async fn start(admin: &str, chromium: &Path, screenshots: &Path) -> Browser {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dashboard.mjs");
        let mut cmd = clean_command("node");
        cmd.arg(script)
            .env("AGENTGATE_ADMIN", admin)
            .env("AGENTGATE_SCREENSHOTS", screenshots)
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("dashboard.mjs: cannot start node ({e}); run scripts/test to install it")
        });
        let stdin = child.stdin.take().expect("dashboard.mjs stdin");
        let stderr = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().expect("stderr"), stderr.clone());
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(READY_TIMEOUT, stdout.next_line()).await;
        if !matches!(&line, Ok(Ok(Some(l))) if l == "READY") {
            let _ = child.kill().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "dashboard.mjs: no READY within {READY_TIMEOUT:?} (got {line:?}); stderr:\n{}",
                stderr.lock().expect("stderr buffer")
            );
        }
        Browser {
            child,
            stdin,
            stdout,
            stderr,
            n: 0,
        }
    }

    /// Runs one step; panics with the script's error (a screenshot `failed-<cmd>.png` is
    /// saved beside the others).
    async fn step(&mut self, cmd: &str, args: Value) -> Value {
        self.n += 1;
        let line = json!({"n": self.n, "cmd": cmd, "args": args}).to_string() + "\n";
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("dashboard.mjs stdin ({cmd}): {e}; {}", self.err()));
        let answer = tokio::time::timeout(STEP_TIMEOUT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("browser step {cmd} took over {STEP_TIMEOUT:?}"));
        let answer = match answer {
            Ok(Some(l)) => l,
            other => panic!(
                "dashboard.mjs ended during {cmd} ({other:?}); {}",
                self.err()
            ),
        };
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("dashboard.mjs answered non-JSON ({e}): {answer}"));
        assert_eq!(v["n"], self.n, "answer to another step: {v}");
        assert!(
            v["ok"] == true,
            "browser step {cmd} failed (see target/dashboard-screenshots/failed-{cmd}.png):\n{}",
            v["error"].as_str().unwrap_or(&answer)
        );
        v["result"].clone()
    }

    fn err(&self) -> String {
        format!("stderr:\n{}", self.stderr.lock().expect("stderr buffer"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("---- dashboard.mjs {} ----", self.err());
        }
    }
}

fn drain(mut src: impl AsyncRead + Unpin + Send + 'static, buf: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = src.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.lock()
                .expect("stderr buffer")
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
}

/// What one `curl` through the proxy as an agent gave.
struct Fetched {
    exit: Option<i32>,
    /// The response's status (0 when none).
    status: u16,
    /// The CONNECT answer's status (0 when none).
    connect: u16,
    request_id: Option<String>,
    body: String,
}

/// `curl URL` through the proxy as `who`.
async fn curl_get(proxy: &Proxy, who: &Registered, url: &str) -> Fetched {
    let tmp = tempfile::tempdir().expect("tempdir");
    let head_file = tmp.path().join("headers");
    let body_file = tmp.path().join("body");
    let mut cmd = clean_command("curl");
    cmd.args(["-sS", "--max-time", "30", "-x", &who.proxy_url(proxy)])
        .arg("--cacert")
        .arg(&proxy.ca_path)
        .arg("-D")
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code} %{http_connect}", url]);
    let out = output(cmd, "curl").await;
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut codes = codes.split_whitespace().map(|c| c.parse().unwrap_or(0));
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    let request_id = head.lines().rev().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-agentgate-request-id")
            .then(|| v.trim().to_owned())
    });
    Fetched {
        exit: out.status.code(),
        status: codes.next().unwrap_or(0),
        connect: codes.next().unwrap_or(0),
        request_id,
        body: std::fs::read_to_string(&body_file).unwrap_or_default(),
    }
}

/// One request to the admin API with the instance admin token (or none).
async fn admin(
    proxy: &Proxy,
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: bool,
) -> RawResponse {
    let token = auth.then(|| proxy.admin_token());
    crate::support::admin::call(proxy.admin_addr, method, path, token.as_deref(), body).await
}

/// A one-time sign-in link from `agentgate dashboard --no-open` (the URL on stdout).
async fn dashboard_link(proxy: &Proxy) -> String {
    let out = crate::support::cli::agentgate(&proxy.home, &["dashboard", "--no-open"], &[]).await;
    let stdout = ok(&out, "agentgate dashboard --no-open");
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.contains("#code="))
        .unwrap_or_else(|| panic!("no sign-in URL in `agentgate dashboard --no-open`: {stdout:?}"))
        .to_owned()
}

/// Requests for `POST path` the upstream saw.
fn upstream_posts(env: &TestEnv, path: &str) -> usize {
    let line = format!("POST {path}");
    env.upstream
        .requests()
        .iter()
        .filter(|l| **l == line)
        .count()
}

/// The whole dashboard flow in one browser session (see the module comment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_shows_decisions_answers_consents_and_panics() {
    let chromium = chromium();
    let env = TestEnv::new().await;
    let proxy = env.start(
        env.with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("consent", "mode", &toml_str("hold"))
            .set("consent", "timeout", &toml_str("60s")),
    );
    let bot = register(&proxy, "bot", "alice", &[]).await;
    let base = format!("http://{}", proxy.admin_addr);
    let shots = screenshot_dir();
    let mut browser = Browser::start(&base, &chromium, &shots).await;

    // Without a token: the page and its CSP, the sign-in form, no data, no API call.
    let r = browser.step("open_anonymous", json!({})).await;
    assert_eq!(r["status"], 200, "{r:#}");
    let csp = r["headers"]["content-security-policy"]
        .as_str()
        .unwrap_or("");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive:?}: {r:#}");
    }
    assert_eq!(r["app_visible"], false, "{r:#}");
    assert_eq!(r["decisions"], 0, "{r:#}");
    assert_eq!(
        r["api_calls"],
        json!([]),
        "the page called the API before sign-in: {r:#}"
    );

    // A wrong pasted token: refused with a message; nothing succeeded.
    let r = browser
        .step("wrong_token", json!({"token": "not-an-admin-token"}))
        .await;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("not accepted")),
        "{r:#}"
    );
    assert_eq!(r["signin_visible"], true, "{r:#}");
    assert_eq!(r["app_visible"], false, "{r:#}");
    let calls = r["api_calls"].as_array().expect("api_calls");
    assert!(!calls.is_empty(), "the pasted token was not checked: {r:#}");
    assert!(
        calls.iter().all(|c| c["status"] == 401),
        "an API call succeeded with a wrong token: {r:#}"
    );

    // The one-time link: signed in, code gone from the URL, live stream, data panels.
    let link = dashboard_link(&proxy).await;
    assert!(link.starts_with(&format!("{base}/#code=")), "{link}");
    let r = browser.step("open_link", json!({"url": link})).await;
    assert_eq!(
        r["url"],
        format!("{base}/"),
        "the code stayed in the URL: {r:#}"
    );
    assert_eq!(r["signin_visible"], false, "{r:#}");
    assert_eq!(r["stream"], "live", "{r:#}");
    assert_eq!(r["scope"], "instance", "{r:#}");
    assert_eq!(r["cookies"], 0, "{r:#}");
    assert_eq!(r["local_storage"], 0, "{r:#}");
    assert_eq!(
        r["session_storage"].as_array().map(Vec::len),
        Some(1),
        "{r:#}"
    );
    assert!(
        r["audit"]
            .as_str()
            .is_some_and(|a| a.starts_with("Chain intact")),
        "{r:#}"
    );
    assert!(
        r["policy"].as_str().is_some_and(|p| p.contains("enforce")),
        "{r:#}"
    );
    // The code worked once.
    let code = link.split("#code=").nth(1).expect("code");
    let again = admin(
        &proxy,
        "POST",
        "/api/v1/dashboard/exchange",
        Some(&json!({"code": code}).to_string()),
        false,
    )
    .await;
    assert_eq!(
        again.status,
        401,
        "a used code was accepted again: {}",
        again.text()
    );

    // A read: an allowed row with its latency, and its audit record by keyboard.
    let got = curl_get(&proxy, &bot, READ_URL).await;
    assert_eq!((got.exit, got.status), (Some(0), 200), "{}", got.body);
    let request_id = got.request_id.expect("X-AgentGate-Request-Id");
    let row = browser
        .step(
            "wait_decision",
            json!({"action": READ_ACTION, "effect": "allow", "screenshot": "2-decision.png"}),
        )
        .await;
    let cells = row["cells"].as_array().expect("cells");
    assert_eq!(cells[1], "bot", "{row:#}");
    assert_eq!(cells[3], "github.repo:acme/web", "{row:#}");
    assert!(
        cells[7].as_str().is_some_and(|l| l.ends_with(" ms")),
        "latency {row:#}"
    );
    let records = audit_decisions(&proxy, |rs| {
        rs.iter().any(|r| r["request_id"] == request_id.as_str())
    })
    .await;
    let record = records
        .iter()
        .find(|r| r["request_id"] == request_id.as_str())
        .expect("decision record of the read");
    assert_eq!(
        row["seq"], record["seq"],
        "row {row:#} vs record {record:#}"
    );
    let shown = browser
        .step("open_record", json!({"seq": row["seq"]}))
        .await;
    assert_eq!(
        shown["json"], *record,
        "the record view differs from audit.db"
    );
    let hash = shown["meta"][0].as_str().unwrap_or("");
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{shown:#}"
    );

    // A held write: a pending consent in the panel; Approve releases it.
    let body = r#"{"title":"From the dashboard test","body":"approve me"}"#;
    let held = held::post_json(
        bot.proxy_url(&proxy),
        proxy.ca_path.clone(),
        WRITE_URL,
        body,
        60,
        &[],
    );
    let consent = browser
        .step("wait_consent", json!({"action": WRITE_ACTION}))
        .await;
    let id = consent["id"].as_str().expect("consent id").to_owned();
    let listed = admin(&proxy, "GET", "/api/v1/consents", None, true).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    let pending = listed["consents"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("consent {id} of the page is not pending: {listed:#}"));
    let code = pending["binding_code"].as_str().expect("binding_code");
    assert!(
        consent["text"].as_str().is_some_and(|t| t.contains(code)),
        "the card does not show binding code {code}: {consent:#}"
    );
    assert!(!held.is_finished(), "the write was not held");
    assert_eq!(upstream_posts(&env, WRITE_PATH), 0);
    browser.step("approve", json!({"id": id})).await;
    let released = finish(held, 20).await;
    released.answered();
    assert!(
        (200..300).contains(&released.status),
        "the approved write got {}: {}",
        released.status,
        String::from_utf8_lossy(&released.body)
    );
    assert_eq!(upstream_posts(&env, WRITE_PATH), 1);
    let row = browser
        .step(
            "wait_decision",
            json!({"action": WRITE_ACTION, "effect": "allow", "screenshot": "4-approved.png"}),
        )
        .await;
    assert_eq!(row["policy_effect"], "escalate", "{row:#}");
    // The filters: escalations only, then text, then back to everything.
    let shown = browser.step("filter", json!({"effect": "escalate"})).await;
    assert_eq!(shown, json!([WRITE_ACTION]), "effect filter");
    let shown = browser
        .step("filter", json!({"text": "list-for", "agent": "bot"}))
        .await;
    assert_eq!(shown, json!([READ_ACTION]), "text + agent filter");
    let shown = browser.step("filter", json!({})).await;
    assert!(
        shown.as_array().is_some_and(|a| a.len() >= 2),
        "all rows again: {shown}"
    );
    // A candidate that denies everything, replayed from the policy panel: the read and the
    // write would both change.
    let replay = browser
        .step(
            "replay",
            json!({"rego": "package agentgate\ndecision := {\"effect\": \"deny\", \"reasons\": [\"no\"]}\n"}),
        )
        .await;
    assert!(
        replay["summary"]
            .as_str()
            .is_some_and(|s| s.contains("would change")),
        "{replay:#}"
    );
    let rows = replay["rows"].to_string();
    assert!(
        rows.contains("allow → deny") && rows.contains(READ_ACTION),
        "{replay:#}"
    );
    let answered = admin(&proxy, "GET", &format!("/api/v1/consents/{id}"), None, true).await;
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(answered.json()["status"], "approved", "{}", answered.text());

    // PANIC from the dialog for that agent: refused afterwards, shown revoked.
    let r = browser
        .step("panic", json!({"agent": "bot", "reason": "dashboard e2e"}))
        .await;
    assert!(
        r["label"].as_str().is_some_and(|l| l.contains("bot")),
        "the confirm button should name the agent: {r:#}"
    );
    assert!(
        r["all_label"]
            .as_str()
            .is_some_and(|l| l.contains("every agent")),
        "{r:#}"
    );
    assert!(
        r["result"]
            .as_str()
            .is_some_and(|t| t.contains("bot") && t.contains("identity")),
        "{r:#}"
    );
    browser.step("wait_revoked", json!({"agent": "bot"})).await;
    let after = curl_get(&proxy, &bot, READ_URL).await;
    assert!(
        after.connect == 403 || after.status == 403,
        "the agent was not refused after PANIC: exit {:?} connect {} status {} {}",
        after.exit,
        after.connect,
        after.status,
        after.body
    );
    let panics: Vec<Value> = read_records(&proxy.home.join("audit.db"), "admin")
        .into_iter()
        .filter(|r| r["event"] == "panic")
        .collect();
    assert!(
        panics
            .iter()
            .any(|r| r["detail"]["reason"] == "dashboard e2e"),
        "no panic record with the dialog's reason: {panics:#?}"
    );

    // Nothing went wrong in the page (CSP violations, script errors, failed loads).
    let e = browser.step("errors", json!({})).await;
    assert_eq!(
        e["unexpected"],
        json!([]),
        "browser console errors or page errors: {e:#}"
    );
}

/// In a fleet, the dashboard's "whole fleet" switch shows decisions made on another instance
/// (from the fleet's audit stream), and their records open from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_whole_fleet() {
    use crate::support::nats::Nats;
    let chromium = chromium();
    let env = TestEnv::new().await;
    let nats = Nats::start(env.dir.path());
    let instance = |name: &str| {
        let home = env.dir.path().join(name);
        std::fs::create_dir_all(&home).expect("home");
        // One vault key for the fleet: its entries are tagged under a key derived from it.
        crate::support::cli::write_private(
            &home.join("vault.key"),
            b"ZmxlZXQtdmF1bHQta2V5LWZvci10aGUtZTJlLXRlc3Q=\n",
        );
        let cfg = env
            .with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("fleet", "url", &toml_str(&nats.url()))
            .set("fleet", "name", &toml_str("dash"));
        let path = home.join("agentgate.toml");
        std::fs::write(&path, cfg.render()).expect("config");
        crate::support::proxy::start(&home, &path, &[])
    };
    let (a, b) = (instance("a"), instance("b"));
    let bot = register(&a, "bot", "alice", &[]).await;
    let base = format!("http://{}", a.admin_addr);
    let mut browser = Browser::start(&base, &chromium, &screenshot_dir()).await;
    let link = dashboard_link(&a).await;
    let r = browser.step("open_link", json!({"url": link})).await;
    assert_eq!(r["stream"], "live", "{r:#}");

    let r = browser.step("fleet_scope", json!({"on": true})).await;
    assert_eq!(r["decisions"], 0, "the view starts over: {r:#}");
    // The registry is shared: the token issued on A works on B.
    let got = curl_get(&b, &bot, READ_URL).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let b_instance = read_records(&b.home.join("audit.db"), "decision")[0]["instance"]
        .as_str()
        .expect("instance")
        .to_owned();
    let r = browser
        .step(
            "wait_decision",
            json!({"action": READ_ACTION, "effect": "allow", "screenshot": "fleet-decisions.png"}),
        )
        .await;
    assert_eq!(r["instance"], b_instance.as_str(), "{r:#}");
    let seq = r["seq"].as_u64().expect("seq");
    let rec = browser.step("open_record", json!({"seq": seq})).await;
    assert_eq!(rec["json"]["instance"], b_instance.as_str(), "{rec:#}");
    assert_eq!(rec["json"]["action"]["name"], READ_ACTION, "{rec:#}");

    let e = browser.step("errors", json!({})).await;
    assert_eq!(e["unexpected"], json!([]), "browser errors: {e:#}");
}
