//! MCP-aware gates with the official SDKs as peers (support/mcp.rs): a Streamable HTTP
//! server (TypeScript SDK) under a real-looking name configured as `[[mcp.servers]]`,
//! reached through AgentGate by the TypeScript and the Python SDK's clients, judged by the
//! shipped default policy tool by tool: a read-only tool allowed, a destructive one denied
//! before it reaches the server, writes held for a person and completed on approval, the
//! injected credential seen by the server and never by the client, streams intact, a tool
//! the server redefined mid-session caught (and re-pinned with `agentgate mcp accept`), and
//! every call in the audit with its tool.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cli::{agentgate, ok};
use crate::support::clients::curl;
use crate::support::mcp::{
    Answers, McpClient, McpServer, RUG_PULLED_DESCRIPTION, Via, big_text, call, call_text,
    run_script, step_ok, tool,
};
use crate::support::proxy::{Proxy, toml_str};
use crate::support::{TestEnv, read_records};

/// The credential AgentGate injects at the MCP server's origin.
const CANARY: &str = "ghu_mcpCanaryToken0123456789abcdef";

/// The default policy, `[[mcp.servers]]` github at the test server, requests held for
/// consent, and a static credential for the server's origin in the vault.
async fn start(env: &TestEnv, server: &McpServer) -> Proxy {
    let cfg = env
        .with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "timeout", &toml_str("30s"))
        .set(
            "mcp",
            "servers",
            r#"[{ name = "github", url = "https://api.githubcopilot.com/mcp" }]"#,
        );
    // A second name for the same server, which no [[mcp.servers]] entry names.
    let cfg = cfg.resolve("mcp.elsewhere.example:443", server.addr);
    let proxy = env.start(server.route(cfg));
    store_credential(env, &proxy).await;
    proxy
}

/// `vault set copilot` with [`CANARY`] for the MCP server's origin.
async fn store_credential(env: &TestEnv, proxy: &Proxy) {
    let secret = env.dir.path().join("mcp-secret");
    std::fs::write(&secret, CANARY).unwrap();
    let out = agentgate(
        &proxy.home,
        &[
            "vault",
            "set",
            "copilot",
            "--kind",
            "static",
            "--origin",
            "https://api.githubcopilot.com",
            "--secret-file",
            &secret.display().to_string(),
        ],
        &[],
    )
    .await;
    ok(&out, "vault set copilot");
}

/// Answers held consents while `until` runs: approves every pending one, except calls of
/// `deny_tool`, which it denies.
async fn approving<T>(
    proxy: &Proxy,
    deny_tool: &str,
    until: impl std::future::Future<Output = T>,
) -> T {
    let approver = async {
        loop {
            let out = agentgate(&proxy.home, &["consent", "list", "-o", "json"], &[]).await;
            let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for c in list {
                let id = c["id"].as_str().unwrap_or_default().to_owned();
                let verb = if c["action"].as_str().is_some_and(|a| a.ends_with(deny_tool)) {
                    "deny"
                } else {
                    "approve"
                };
                agentgate(&proxy.home, &["consent", verb, &id], &[("USER", "alice")]).await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    tokio::select! {
        out = until => out,
        () = approver => unreachable!("the approver loops until the client is done"),
    }
}

/// Decision records of MCP calls (action, effect, reasons), waiting for at least `n`.
async fn mcp_decisions(proxy: &Proxy, n: usize) -> Vec<Value> {
    let db = proxy.home.join("audit.db");
    let mut found = Vec::new();
    for _ in 0..100 {
        found = read_records(&db, "decision")
            .into_iter()
            .filter(|r| {
                r["action"]["name"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("mcp."))
            })
            .collect();
        if found.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    found
}

async fn judged_tool_by_tool(client: McpClient) {
    let env = TestEnv::new().await;
    // The server takes nothing but the credential AgentGate injects.
    let server = McpServer::start_with(&env, Answers::Sse, Some(CANARY)).await;
    let proxy = start(&env, &server).await;
    let who = client.name();
    let steps = json!([
        {"op": "list"},
        call("list_issues", json!({"owner": "octo", "repo": "hello"})),
        call("delete_repository", json!({"owner": "octo", "repo": "hello"})),
        call("create_issue", json!({"owner": "octo", "repo": "hello", "title": "Bug", "body": "It breaks."})),
        call("big_output", json!({"kb": 256})),
        call("slow_stream", json!({"chunks": 4, "delay_ms": 150})),
        call("rug_pull", json!({})),
        {"op": "list"},
        call("list_issues", json!({"owner": "octo", "repo": "hello"})),
        call("get_auth_debug", json!({})),
    ]);
    let out = approving(
        &proxy,
        "list_issues",
        run_script(client, &server.url(), Via::Proxy(&proxy), &steps, &[]),
    )
    .await;

    // A read-only tool: allowed, answered.
    step_ok(&out, 0);
    assert!(!call_text(step_ok(&out, 1)).is_empty(), "{who}: {out}");
    // A destructive tool: refused before it reaches the server.
    assert_eq!(
        out["steps"][2]["ok"], false,
        "{who}: delete_repository: {out}"
    );
    assert!(server.calls_of("delete_repository").is_empty(), "{who}");
    // The refusal answers the call as a JSON-RPC error the client shows, with why.
    let refusal = out["steps"][2]["error"].to_string();
    assert!(
        refusal.contains("refused by AgentGate (policy_denied)")
            && refusal.contains("delete-class"),
        "{who}: the client did not see why: {refusal}"
    );
    // Writes: held, approved, completed; the server saw the injected credential.
    step_ok(&out, 3);
    let created = server.calls_of("create_issue");
    assert_eq!(created.len(), 1, "{who}");
    assert!(
        created[0].to_string().contains(&format!("Bearer {CANARY}")),
        "{who}: the server did not get the injected credential: {}",
        created[0]
    );
    assert!(
        !out.to_string().contains(CANARY),
        "{who}: the client saw the credential"
    );
    // Streams through the gate intact: a large answer and one that trickles.
    assert_eq!(
        call_text(step_ok(&out, 4)),
        big_text(256),
        "{who}: big_output"
    );
    step_ok(&out, 5);
    let progress = out["notifications"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter(|n| n["method"] == "notifications/progress" && n["step"] == 5)
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        progress, 4,
        "{who}: progress notifications of slow_stream: {out}"
    );
    // The rug pull: the next listing redefines list_issues; its next call is held and
    // (denied by the approver here) never reaches the server.
    step_ok(&out, 6);
    assert_eq!(
        tool(step_ok(&out, 7), "list_issues")["description"],
        RUG_PULLED_DESCRIPTION
    );
    assert_eq!(out["steps"][8]["ok"], false, "{who}: {out}");
    assert_eq!(server.calls_of("list_issues").len(), 1, "{who}");

    // A tool that echoes the injected credential over SSE: masked on the way back.
    let echoed = call_text(step_ok(&out, 9));
    assert!(
        echoed.starts_with("authorization: Bearer ") && !echoed.contains(CANARY),
        "{who}: the echoed credential was not masked: {echoed}"
    );

    // Every call is in the audit with its tool; the refusals say why.
    let decisions = mcp_decisions(&proxy, 10).await;
    let of = |tool: &str| -> Vec<&Value> {
        decisions
            .iter()
            .filter(|d| d["context"]["mcp"]["tool"] == tool)
            .collect()
    };
    let delete = of("delete_repository");
    assert_eq!(delete.len(), 1, "{who}: {decisions:#?}");
    assert_eq!(delete[0]["effect"], "deny");
    assert_eq!(delete[0]["resource"]["type"], "github.repo");
    assert_eq!(delete[0]["resource"]["id"], "octo/hello");
    assert!(
        delete[0]["reasons"].to_string().contains("delete-class"),
        "{}",
        delete[0]
    );
    let reads = of("list_issues");
    assert_eq!(reads.len(), 2, "{who}: {decisions:#?}");
    assert_eq!(reads[0]["effect"], "allow");
    assert!(
        reads[1]["reasons"]
            .to_string()
            .contains("tool_definition_changed"),
        "{who}: {}",
        reads[1]
    );
    assert_eq!(reads[1]["context"]["tool"]["changed"], true);
    let session = reads[0]["context"]["mcp"]["session_id"]
        .as_str()
        .unwrap_or_default();
    assert!(!session.is_empty(), "{who}: no session id in {}", reads[0]);

    // The pin and its pending change, then re-pinned: list_issues is a read again.
    let pins = ok(
        &agentgate(&proxy.home, &["mcp", "tools", "-o", "json"], &[]).await,
        "mcp tools",
    );
    let pins: Value = serde_json::from_str(&pins).unwrap();
    let pinned = &pins["servers"][0]["tools"]["list_issues"];
    assert_eq!(pinned["changed"], true, "{pins}");
    assert_eq!(
        pinned["pending_description"], RUG_PULLED_DESCRIPTION,
        "{pins}"
    );
    ok(
        &agentgate(
            &proxy.home,
            &["mcp", "accept", "github", "list_issues"],
            &[],
        )
        .await,
        "mcp accept",
    );
    let again = run_script(
        client,
        &server.url(),
        Via::Proxy(&proxy),
        &json!([call(
            "list_issues",
            json!({"owner": "octo", "repo": "hello"})
        )]),
        &[],
    )
    .await;
    step_ok(&again, 0);
    assert_eq!(server.calls_of("list_issues").len(), 2, "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_calls_are_judged_tool_by_tool_with_the_typescript_sdk() {
    judged_tool_by_tool(McpClient::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_calls_are_judged_tool_by_tool_with_the_python_sdk() {
    judged_tool_by_tool(McpClient::Python).await;
}

/// Messages AgentGate cannot judge as one thing are refused before they leave: a header
/// that disagrees with the body, broken JSON-RPC, a key named twice; MCP to a server that is
/// not configured is denied by the default policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mcp_messages_are_refused() {
    let env = TestEnv::new().await;
    let server = McpServer::start(&env, Answers::Json).await;
    let proxy = start(&env, &server).await;
    let url = server.url();
    let post = |headers: Vec<String>, body: &'static str| {
        let proxy = &proxy;
        let url = url.clone();
        async move {
            let mut args = vec![
                "-X".to_owned(),
                "POST".to_owned(),
                "-H".to_owned(),
                "content-type: application/json".to_owned(),
                "-H".to_owned(),
                "accept: application/json, text/event-stream".to_owned(),
                "--data-binary".to_owned(),
                body.to_owned(),
            ];
            for h in headers {
                args.push("-H".into());
                args.push(h);
            }
            args.push(url);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(proxy, &args).await
        }
    };
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repository","arguments":{"owner":"octo","repo":"hello"}}}"#;
    for (what, headers, body, code) in [
        (
            "Mcp-Method disagrees",
            vec!["Mcp-Method: tools/list".to_owned()],
            call,
            "ambiguous_body",
        ),
        (
            "Mcp-Name disagrees",
            vec![
                "Mcp-Method: tools/call".to_owned(),
                "Mcp-Name: list_issues".to_owned(),
            ],
            call,
            "ambiguous_body",
        ),
        (
            "not JSON-RPC 2.0",
            vec![],
            r#"{"id":1,"method":"tools/list"}"#,
            "unreadable_body",
        ),
        (
            "a key twice",
            vec![],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
            "ambiguous_body",
        ),
        ("not JSON", vec![], "{nope", "unreadable_body"),
    ] {
        let r = post(headers, body).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(code),
            "{what}: {r:?}"
        );
    }
    assert!(
        server.requests().is_empty(),
        "a refused message reached the server"
    );

    // `explain` reads the same message the same way, with the configured servers.
    let body = env.dir.path().join("call.json");
    std::fs::write(&body, call).unwrap();
    let config = env.dir.path().join("agentgate.toml").display().to_string();
    let explained = ok(
        &agentgate(
            &proxy.home,
            &[
                "explain",
                "-c",
                &config,
                "POST",
                "https://api.githubcopilot.com/mcp",
                "--body",
                &body.display().to_string(),
                "-H",
                "content-type:application/json",
                "-o",
                "json",
            ],
            &[],
        )
        .await,
        "explain",
    );
    let explained: Value = serde_json::from_str(&explained).unwrap();
    assert_eq!(
        explained["tuple"]["action"]["name"], "mcp.github.tools.call.delete_repository",
        "{explained}"
    );
    assert_eq!(explained["decision"]["effect"], "deny", "{explained}");

    // Declared MCP to a host no [[mcp.servers]] names.
    let r = curl(
        &proxy,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "Mcp-Protocol-Version: 2025-11-25",
            "--data-binary",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            "https://mcp.elsewhere.example/mcp",
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("mcp-unknown-server"),
        "{r:?}"
    );
}

/// The MCP authorization spec's challenge reaches the agent unchanged when AgentGate has no
/// credential for the server (the agent's client can see what the server wants), and the
/// credential AgentGate holds answers it once stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_auth_challenge_passes_back_unchanged_without_a_credential() {
    let env = TestEnv::new().await;
    let server = McpServer::start_with(&env, Answers::Json, Some(CANARY)).await;
    let cfg = env.with_default_policy().set(
        "mcp",
        "servers",
        r#"[{ name = "github", url = "https://api.githubcopilot.com/mcp" }]"#,
    );
    let proxy = env.start(server.route(cfg));
    let initialize = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;
    let args = [
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "--data-binary",
        initialize,
        "https://api.githubcopilot.com/mcp",
    ];
    let r = curl(&proxy, &args).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            r#"Bearer resource_metadata="https://api.githubcopilot.com/.well-known/oauth-protected-resource", error="invalid_token""#
        ),
        "{r:?}"
    );
    store_credential(&env, &proxy).await;
    let r = curl(&proxy, &args).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!String::from_utf8_lossy(&r.body).contains(CANARY));
}

/// In a fleet, pins are shared: a tool pinned through one instance is the pin on another,
/// and a rug pull seen through the other makes the next call through the first escalate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_are_shared_by_the_fleet() {
    use super::fleet::{instance_with, readyz, until};
    let env = TestEnv::new().await;
    let nats = crate::support::nats::Nats::start(env.dir.path());
    let server = McpServer::start(&env, Answers::Json).await;
    let cfg = || {
        let cfg = env
            .with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("consent", "timeout", &toml_str("30s"))
            .set(
                "mcp",
                "servers",
                r#"[{ name = "github", url = "https://api.githubcopilot.com/mcp" }]"#,
            );
        server.route(cfg)
    };
    let (a, b) = (
        instance_with(&env, &nats, "a", cfg()),
        instance_with(&env, &nats, "b", cfg()),
    );
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }
    let pins_of = |p: &Proxy| {
        let home = p.home.clone();
        async move {
            let out = agentgate(&home, &["mcp", "tools", "-o", "json"], &[]).await;
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default()["servers"][0]["tools"]
                ["list_issues"]
                .clone()
        }
    };
    let list = json!([{"op": "list"}]);
    step_ok(
        &run_script(McpClient::Node, &server.url(), Via::Proxy(&a), &list, &[]).await,
        0,
    );
    until("B holds the pin taken through A", 10, 1, || async {
        u16::from(pins_of(&b).await["changed"] == false)
    })
    .await;

    // The server redefines list_issues (a write, approved through A); B sees it in its
    // next listing.
    let pull = json!([call("rug_pull", json!({}))]);
    let pulled = approving(
        &a,
        "list_issues",
        run_script(McpClient::Node, &server.url(), Via::Proxy(&a), &pull, &[]),
    )
    .await;
    step_ok(&pulled, 0);
    step_ok(
        &run_script(McpClient::Node, &server.url(), Via::Proxy(&b), &list, &[]).await,
        0,
    );
    until("A holds the change seen through B", 10, 1, || async {
        u16::from(pins_of(&a).await["changed"] == true)
    })
    .await;
    // Held through A (and denied by the approver): the tool changed.
    let out = approving(
        &a,
        "list_issues",
        run_script(
            McpClient::Node,
            &server.url(),
            Via::Proxy(&a),
            &json!([call(
                "list_issues",
                json!({"owner": "octo", "repo": "hello"})
            )]),
            &[],
        ),
    )
    .await;
    assert_eq!(out["steps"][0]["ok"], false, "{out}");
    let decisions = mcp_decisions(&a, 1).await;
    assert!(
        decisions
            .iter()
            .any(|d| d["reasons"].to_string().contains("tool_definition_changed")),
        "{decisions:#?}"
    );
}

/// The older HTTP+SSE transport (the TypeScript SDK's SSE client and server): the stream is
/// a read, each POSTed message is judged like a Streamable HTTP one, and the tool listing,
/// which arrives on the stream, is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_sse_transport_is_judged_and_pinned() {
    let env = TestEnv::new().await;
    let server = McpServer::start(&env, Answers::Legacy).await;
    // Its messages go to /messages beside the stream: the server's URL covers the host.
    let cfg = env
        .with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "mode", &toml_str("async"))
        .set(
            "mcp",
            "servers",
            r#"[{ name = "github", url = "https://api.githubcopilot.com" }]"#,
        );
    let proxy = env.start(server.route(cfg));
    let steps = json!([
        {"op": "list"},
        call("list_issues", json!({"owner": "octo", "repo": "hello"})),
        call("delete_repository", json!({"owner": "octo", "repo": "hello"})),
    ]);
    let out = run_script(
        McpClient::Node,
        &server.url(),
        Via::Proxy(&proxy),
        &steps,
        &["--legacy"],
    )
    .await;
    step_ok(&out, 0);
    step_ok(&out, 1);
    assert_eq!(out["steps"][2]["ok"], false, "{out}");
    assert!(server.calls_of("delete_repository").is_empty());
    let decisions = mcp_decisions(&proxy, 3).await;
    let actions: Vec<&str> = decisions
        .iter()
        .filter_map(|d| d["action"]["name"].as_str())
        .collect();
    assert!(actions.contains(&"mcp.github.stream"), "{actions:?}");
    assert!(
        actions.contains(&"mcp.github.tools.call.delete_repository"),
        "{actions:?}"
    );
    let pins = ok(
        &agentgate(&proxy.home, &["mcp", "tools", "-o", "json"], &[]).await,
        "mcp tools",
    );
    let pins: Value = serde_json::from_str(&pins).unwrap();
    assert_eq!(
        pins["servers"][0]["tools"]["list_issues"]["changed"], false,
        "{pins}"
    );
}
