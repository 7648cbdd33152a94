//! The newcomer path: git over HTTPS through AgentGate, with the shipped policy, against a
//! real `git http-backend` reached as `github.com` (tests/support/git_server.rs) that, like
//! github.com for a private repository, wants `Basic x-access-token:<token>`. A GitHub token
//! stored once with `vault set github` (origin api.github.com) serves git on github.com:
//! `git ls-remote` and `git clone` get through as `github.git.fetch` reads, the credential
//! reaching the server in git's form while the agent never holds it; `git push` is a write,
//! held for a person, and reaches the server only once approved. Also: the `service` query
//! that names the operation is refused when ambiguous, `env` sets `HTTPLIB2_CA_CERTS`, and
//! the README quick start's first request is one the shipped policy allows.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cli::{consent_list, ok, register, secret_file};
use crate::support::clients::{clean_command, curl, output};
use crate::support::git_server::{GitRequest, GitServer, bare_repo, basic, git};
use crate::support::proxy::{ConfigBuilder, Proxy, toml_str};
use crate::support::upstream::{Mode, Upstream};
use crate::support::{TestEnv, audit_decisions};

// ---------------------------------------------------------------------------------------
// Helpers

/// A GitHub token no test produces by accident.
fn canary() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("ghp_gitCanary{hex}")
}

/// A git server for github.com serving `acme/web`, the shipped policy with consents held
/// (for `timeout`), and a static GitHub token stored with the real CLI. Returns the
/// running proxy, the server, the token and the repository's first commit.
struct Setup {
    env: TestEnv,
    server: GitServer,
    proxy: Proxy,
    token: String,
    head: String,
}

async fn setup(timeout: &str) -> Setup {
    let env = TestEnv::new().await;
    let root = env.dir.path().join("git-root");
    let head = bare_repo(&root, "acme", "web", "hello from acme/web\n");
    let token = canary();
    let leaf = env.pki.upstream_ca.leaf(&["github.com"], false);
    let server = GitServer::start(leaf, root, &token).await;
    let cfg: ConfigBuilder = env
        .with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "timeout", &toml_str(timeout))
        .resolve("github.com:443", server.addr);
    env.write_config(&cfg);
    // The api.github.com connection (the default origin of `vault set github`).
    let file = secret_file(env.dir.path(), "github.token", &format!("{token}\n"));
    let file = file.display().to_string();
    let config = env.dir.path().join("agentgate.toml").display().to_string();
    let out = crate::support::cli::agentgate(
        &env.home(),
        &[
            "vault",
            "set",
            "github",
            "--kind",
            "static",
            "--secret-file",
            &file,
        ],
        &[("AGENTGATE_CONFIG", &config)],
    )
    .await;
    assert!(
        ok(&out, "vault set").contains("origin api.github.com"),
        "{out:?}"
    );
    let proxy = env.start(cfg);
    register(&proxy, "bot", "alice", &[]).await;
    Setup {
        env,
        server,
        proxy,
        token,
        head,
    }
}

/// `agentgate exec --agent bot -- git ARGS` in `dir`, with no git configuration of the
/// user's and no prompt.
async fn exec_git(s: &Setup, dir: &Path, args: &[&str]) -> Output {
    let dir = dir.display().to_string();
    let mut all = vec!["exec", "--agent", "bot", "--", "git", "-C", &dir];
    all.extend_from_slice(args);
    crate::support::cli::agentgate(
        &s.proxy.home,
        &all,
        &[
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("HOME", "/nonexistent"),
            ("GIT_AUTHOR_NAME", "Bot"),
            ("GIT_AUTHOR_EMAIL", "bot@example.com"),
            ("GIT_COMMITTER_NAME", "Bot"),
            ("GIT_COMMITTER_EMAIL", "bot@example.com"),
            ("USER", "bot"),
        ],
    )
    .await
}

/// The requests the git server received whose target contains `marker`.
fn received(server: &GitServer, marker: &str) -> Vec<GitRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.target.contains(marker))
        .collect()
}

/// Decision records of requests to github.com, once at least `n` are in.
async fn git_decisions(proxy: &Proxy, n: usize) -> Vec<Value> {
    let is_git = |r: &&Value| r["host"] == "github.com" && r["method"] != "CONNECT";
    audit_decisions(proxy, |rs| rs.iter().filter(is_git).count() >= n)
        .await
        .iter()
        .filter(is_git)
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests

/// `git ls-remote` and `git clone` of https://github.com/acme/web run through the shipped
/// policy as `github.git.fetch` reads of repository acme/web. The server wants the token as
/// `Basic x-access-token:<token>` (401 otherwise) and received exactly that on every request,
/// although git sent none and only api.github.com has a vault connection; the agent's
/// environment never held the token in any form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_fetches_with_the_vault_token_in_git_form() {
    let s = setup("60s").await;
    let work = tempfile::tempdir().expect("work dir");

    // The server really wants credentials: asked directly, without any, it answers 401.
    s.env
        .sent_directly("GET", "/acme/web/info/refs?service=git-upload-pack");
    let mut direct = clean_command("curl");
    direct
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "30"])
        .arg("--connect-to")
        .arg(format!("github.com:443:{}", s.server.addr))
        .arg("--cacert")
        .arg(&s.env.pki.upstream_ca_path)
        .arg("https://github.com/acme/web/info/refs?service=git-upload-pack");
    let head = String::from_utf8_lossy(&output(direct, "curl direct").await.stdout).into_owned();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(r#"www-authenticate: basic realm="github""#),
        "{head}"
    );

    let out = exec_git(
        &s,
        work.path(),
        &["ls-remote", "https://github.com/acme/web"],
    )
    .await;
    let refs = ok(&out, "exec git ls-remote");
    assert!(
        refs.contains(&format!("{}\trefs/heads/main", s.head)),
        "{refs}"
    );

    let out = exec_git(
        &s,
        work.path(),
        &["clone", "--quiet", "https://github.com/acme/web.git", "web"],
    )
    .await;
    ok(&out, "exec git clone");
    let readme = std::fs::read_to_string(work.path().join("web/README.md")).expect("README.md");
    assert_eq!(readme, "hello from acme/web\n");

    // The server saw the credential in git's form on every request, and answered them all.
    let want = basic(&s.token);
    // (The first was the direct request above.)
    let seen: Vec<GitRequest> = s.server.requests().into_iter().skip(1).collect();
    assert!(
        seen.iter()
            .any(|r| r.method == "GET" && r.target.ends_with("/info/refs?service=git-upload-pack")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.method == "POST" && r.target == "/acme/web.git/git-upload-pack"),
        "{seen:#?}"
    );
    for r in &seen {
        assert_eq!(r.authorization.as_deref(), Some(want.as_str()), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
    }

    // Each was judged a fetch of acme/web, allowed, with the api.github.com credential.
    let records = git_decisions(&s.proxy, seen.len()).await;
    assert_eq!(records.len(), seen.len(), "{records:#?}");
    for r in &records {
        assert_eq!(r["action"]["name"], "github.git.fetch", "{r:#}");
        assert_eq!(r["action"]["properties"]["class"], "read", "{r:#}");
        assert_eq!(r["resource"]["type"], "github.repo", "{r:#}");
        assert_eq!(r["resource"]["id"], "acme/web", "{r:#}");
        assert_eq!(r["effect"], "allow", "{r:#}");
        let credential = r["credential"]["id"].as_str().unwrap_or_default();
        assert!(
            credential.starts_with("cred_"),
            "no credential named: {r:#}"
        );
    }

    // The token, in any form, was never the agent's: not in `env`, not in exec's environment.
    let encoded = want.trim_start_matches("Basic ");
    let env_out =
        crate::support::cli::agentgate(&s.proxy.home, &["env", "--agent", "bot"], &[]).await;
    let exported = ok(&env_out, "env");
    let exec_env = ok(
        &crate::support::cli::agentgate(
            &s.proxy.home,
            &["exec", "--agent", "bot", "--", "env"],
            &[],
        )
        .await,
        "exec env",
    );
    for text in [&exported, &exec_env] {
        assert!(!text.contains(&s.token), "the token reached the agent");
        assert!(!text.contains(encoded), "the Basic form reached the agent");
    }
    // httplib2 (Google's Python client) trusts only HTTPLIB2_CA_CERTS: it gets the bundle.
    let bundle = s.proxy.home.join("ca-bundle.pem").display().to_string();
    assert!(
        exported.contains(&format!("export HTTPLIB2_CA_CERTS='{bundle}'")),
        "{exported}"
    );
    assert!(
        exec_env.contains(&format!("HTTPLIB2_CA_CERTS={bundle}")),
        "{exec_env}"
    );
}

/// `git push` is a write: the shipped policy escalates both its ref discovery and its pack.
/// Denied, nothing of it reaches the server; approved request by request, the push lands
/// in the repository with the credential in git's form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_push_waits_for_a_person_and_reaches_github_only_when_approved() {
    let s = setup("60s").await;
    let work = tempfile::tempdir().expect("work dir");
    ok(
        &exec_git(
            &s,
            work.path(),
            &["clone", "--quiet", "https://github.com/acme/web", "web"],
        )
        .await,
        "exec git clone",
    );
    let repo = work.path().join("web");
    std::fs::write(repo.join("CHANGES.md"), "pushed by the bot\n").expect("write");
    git(&repo, &["add", "CHANGES.md"]);
    git(&repo, &["commit", "--quiet", "-m", "bot change"]);
    let new_head = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let repo_arg = repo.display().to_string();

    // Denied: the push fails, and no receive-pack request reached the server. (Pushed to
    // the `.git` URL: a denied request is not asked about again, and the approved push
    // below must be another request, for the same repository.)
    let push = {
        let home = s.proxy.home.clone();
        let repo_arg = repo_arg.clone();
        tokio::spawn(async move {
            crate::support::cli::agentgate(
                &home,
                &[
                    "exec",
                    "--agent",
                    "bot",
                    "--",
                    "git",
                    "-C",
                    &repo_arg,
                    "push",
                    "https://github.com/acme/web.git",
                    "main",
                ],
                &[
                    ("GIT_TERMINAL_PROMPT", "0"),
                    ("GIT_CONFIG_NOSYSTEM", "1"),
                    ("GIT_CONFIG_GLOBAL", "/dev/null"),
                    ("HOME", "/nonexistent"),
                ],
            )
            .await
        })
    };
    let pending = wait_pending(&s.proxy).await;
    assert_eq!(pending["action"], "github.git.push", "{pending:#}");
    assert_eq!(pending["resource"]["type"], "github.repo", "{pending:#}");
    assert_eq!(pending["resource"]["id"], "acme/web", "{pending:#}");
    assert!(received(&s.server, "receive-pack").is_empty());
    let id = pending["id"].as_str().expect("consent id").to_owned();
    ok(
        &approver(&s.proxy, &["consent", "deny", &id]).await,
        "consent deny",
    );
    let out = push.await.expect("push task");
    assert!(
        !out.status.success(),
        "push succeeded without consent: {out:?}"
    );
    assert!(
        received(&s.server, "receive-pack").is_empty(),
        "{:#?}",
        s.server.requests()
    );
    let records = git_decisions(&s.proxy, 1).await;
    let denied = records
        .iter()
        .find(|r| r["action"]["name"] == "github.git.push")
        .unwrap_or_else(|| panic!("no push decision: {records:#?}"));
    assert_eq!(denied["policy_effect"], "escalate", "{denied:#}");
    assert_eq!(denied["effect"], "deny", "{denied:#}");
    assert_eq!(denied["resource"]["id"], "acme/web", "{denied:#}");

    // Approved, request by request: the push lands.
    let push = {
        let home = s.proxy.home.clone();
        tokio::spawn(async move {
            crate::support::cli::agentgate(
                &home,
                &[
                    "exec", "--agent", "bot", "--", "git", "-C", &repo_arg, "push", "origin",
                    "main",
                ],
                &[
                    ("GIT_TERMINAL_PROMPT", "0"),
                    ("GIT_CONFIG_NOSYSTEM", "1"),
                    ("GIT_CONFIG_GLOBAL", "/dev/null"),
                    ("HOME", "/nonexistent"),
                ],
            )
            .await
        })
    };
    let mut approved = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !push.is_finished() {
        assert!(Instant::now() < deadline, "push did not finish");
        for c in consent_list(&s.proxy, false).await {
            assert_eq!(c["action"], "github.git.push", "{c:#}");
            let before = received(&s.server, "receive-pack").len();
            assert_eq!(
                before, approved,
                "a push request went ahead of its approval"
            );
            let id = c["id"].as_str().expect("consent id");
            ok(
                &approver(&s.proxy, &["consent", "approve", id]).await,
                "approve",
            );
            approved += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok(&push.await.expect("push task"), "exec git push");
    assert_eq!(
        approved, 2,
        "ref discovery and the pack each need a consent"
    );
    let want = basic(&s.token);
    let pushes = received(&s.server, "receive-pack");
    assert_eq!(pushes.len(), 2, "{pushes:#?}");
    for r in &pushes {
        assert_eq!(r.authorization.as_deref(), Some(want.as_str()), "{r:?}");
    }
    let bare = s.env.dir.path().join("git-root/acme/web.git");
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), new_head);
}

/// `info/refs` names its operation by the `service` query parameter: without exactly one
/// known value the request is refused `400 ambiguous_request` by the intent gate and never
/// reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_refs_with_an_ambiguous_service_is_refused() {
    let s = setup("60s").await;
    for query in [
        "",
        "?service=git-upload-pack&service=git-receive-pack",
        "?service=git-upload-pack&Service=git-receive-pack",
        "?service=git-upload-archive",
    ] {
        let url = format!("https://github.com/acme/web/info/refs{query}");
        let resp = curl(&s.proxy, &[&url]).await;
        assert_eq!(resp.status, 400, "{url}: {resp:?}");
        assert_eq!(
            resp.header("x-agentgate-denied-by"),
            Some("intent"),
            "{url}"
        );
        let body = resp.json();
        assert_eq!(body["error"], "ambiguous_request", "{url}: {body}");
        assert!(
            body["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("service"),
            "{url}: {body}"
        );
    }
    assert!(s.server.requests().is_empty(), "{:#?}", s.server.requests());
}

/// The README quick start's first example, `curl https://api.github.com/repos/rust-lang/rust`,
/// is a read the shipped policy allows (`explain` sends nothing); its denial example, a
/// `DELETE` of a repository, is denied.
#[test]
fn the_quick_start_first_request_is_allowed() {
    let home = tempfile::tempdir().expect("home");
    let explain = |method: &str, url: &str| -> Value {
        let out =
            crate::support::proxy::cli(home.path(), &["explain", method, url, "-o", "json"], &[]);
        serde_json::from_str(&ok(&out, "explain")).expect("explain -o json")
    };
    let doc = explain("GET", "https://api.github.com/repos/rust-lang/rust");
    assert_eq!(doc["decision"]["effect"], "allow", "{doc:#}");
    assert_eq!(
        doc["tuple"]["action"]["name"], "github.repos.get",
        "{doc:#}"
    );
    let doc = explain("DELETE", "https://api.github.com/repos/rust-lang/rust");
    assert_eq!(doc["decision"]["effect"], "deny", "{doc:#}");
    let doc = explain(
        "GET",
        "https://github.com/rust-lang/rust/info/refs?service=git-upload-pack",
    );
    assert_eq!(doc["decision"]["effect"], "allow", "{doc:#}");
    assert_eq!(
        doc["tuple"]["action"]["name"], "github.git.fetch",
        "{doc:#}"
    );
}

/// On github.com the credential is sent encoded (Basic); an upstream echoing the request
/// headers back must not hand the agent that encoding, which decodes to the token: the
/// echo of `Authorization` reaches the agent masked, the upstream having received it whole.
/// (An echo server as github.com, and the allow-all policy of the proxy-core tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_of_the_basic_form_are_masked() {
    let env = TestEnv::new().await;
    let leaf = env.pki.upstream_ca.leaf(&["github.com"], false);
    let echo = Upstream::start(vec![("github.com".to_owned(), leaf)], Mode::Tls).await;
    let cfg = env.config().resolve("github.com:443", echo.addr);
    env.write_config(&cfg);
    let token = canary();
    let file = secret_file(env.dir.path(), "github.token", &token);
    let file = file.display().to_string();
    let config = env.dir.path().join("agentgate.toml").display().to_string();
    ok(
        &crate::support::cli::agentgate(
            &env.home(),
            &[
                "vault",
                "set",
                "github",
                "--kind",
                "static",
                "--secret-file",
                &file,
            ],
            &[("AGENTGATE_CONFIG", &config)],
        )
        .await,
        "vault set",
    );
    let proxy = env.start(cfg);

    let resp = curl(&proxy, &["https://github.com/echo?who=agent"]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let want = basic(&token);
    let encoded = want.trim_start_matches("Basic ");
    let echoed = resp.json()["headers"]["authorization"].clone();
    assert_eq!(
        echoed,
        format!("Basic {}", "*".repeat(encoded.len())),
        "the agent saw the credential's encoding"
    );
    let seen: Vec<_> = echo
        .seen()
        .into_iter()
        .filter(|r| r.path.starts_with("/echo"))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization.as_deref(), Some(want.as_str()));
}

/// `agentgate ARGS` as a person answering consents.
async fn approver(proxy: &Proxy, args: &[&str]) -> Output {
    crate::support::cli::agentgate(&proxy.home, args, &[("USER", "carol")]).await
}

/// The first pending consent, waiting up to 30 s for one.
async fn wait_pending(proxy: &Proxy) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = consent_list(proxy, false).await.into_iter().next() {
            return c;
        }
        assert!(Instant::now() < deadline, "no consent pending within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
