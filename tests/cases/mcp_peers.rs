//! The MCP test peers (support/mcp.rs) work, directly and through today's AgentGate with a
//! policy that allows everything: the official TypeScript and Python SDK clients list tools,
//! call them (a read, a write, a 512 KiB answer, a call that streams progress over SSE), see a
//! rug pull in the next `tools/list`, read a resource and get a prompt, all in one session;
//! and the server's log shows each call arrived. The gate's MCP tests build on these peers.

use crate::support::TestEnv;
use crate::support::mcp::{
    Answers, LIST_ISSUES_DESCRIPTION, MCP_PATH, McpClient, McpServer, RUG_PULLED_DESCRIPTION, Via,
    big_text, call, call_text, run_script, step_ok, tool,
};
use crate::support::proxy::{Proxy, toml_str};
use serde_json::{Value, json};

const BIG_KB: usize = 512;
const CHUNKS: u64 = 5;
const CHUNK_DELAY_MS: u64 = 200;

/// The whole session: list → calls → rug_pull → list, plus a resource and a prompt.
fn session_steps() -> Value {
    json!([
        {"op": "list"},
        call("list_issues", json!({"owner": "octo", "repo": "hello"})),
        call("create_issue", json!({"owner": "octo", "repo": "hello", "title": "Bug", "body": "It breaks."})),
        call("big_output", json!({"kb": BIG_KB})),
        call("slow_stream", json!({"chunks": CHUNKS, "delay_ms": CHUNK_DELAY_MS})),
        call("rug_pull", json!({})),
        {"op": "wait", "method": "notifications/tools/list_changed", "timeout_ms": 10000},
        {"op": "list"},
        {"op": "read", "uri": "repo://octo/hello/README.md"},
        {"op": "prompt", "name": "triage", "args": {"issue": "7"}},
    ])
}

/// An AgentGate allowing every request (its own tiny policy directory), with the MCP host
/// routed to `server`.
fn start_proxy(env: &TestEnv, server: &McpServer) -> Proxy {
    let policy = env.dir.path().join("mcp-allow-all");
    std::fs::create_dir_all(&policy).expect("policy dir");
    std::fs::write(
        policy.join("allow.rego"),
        "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"mcp peers test\"]}\n",
    )
    .expect("write policy");
    let cfg = env
        .config()
        .set("policy", "dir", &toml_str(&policy.display().to_string()));
    env.start(server.route(cfg))
}

/// Everything [`session_steps`] should have produced, in the client's output and in the
/// server's log.
fn assert_session(client: McpClient, out: &Value, server: &McpServer, proxied: bool) {
    let who = client.name();
    assert_eq!(out["connect"]["ok"], true, "{who}: connect: {out}");
    assert_eq!(
        out["protocol_version"], "2025-11-25",
        "{who}: negotiated version"
    );

    let tools = step_ok(out, 0);
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for want in [
        "list_issues",
        "create_issue",
        "delete_repository",
        "big_output",
        "slow_stream",
        "rug_pull",
    ] {
        assert!(names.contains(&want), "{who}: no {want} in {names:?}");
    }
    let list_issues = tool(tools, "list_issues");
    assert_eq!(list_issues["description"], LIST_ISSUES_DESCRIPTION, "{who}");
    assert_eq!(list_issues["annotations"]["readOnlyHint"], true, "{who}");
    assert_eq!(
        tool(tools, "delete_repository")["annotations"]["destructiveHint"],
        true,
        "{who}"
    );
    assert!(
        tool(tools, "create_issue")["annotations"].is_null(),
        "{who}: create_issue has no hints"
    );

    assert!(
        call_text(step_ok(out, 1)).contains("First issue in octo/hello"),
        "{who}: list_issues: {}",
        step_ok(out, 1)
    );
    let created: Value = serde_json::from_str(call_text(step_ok(out, 2))).expect("issue JSON");
    assert_eq!(created["number"], 42, "{who}: create_issue");

    let big = call_text(step_ok(out, 3));
    assert_eq!(big.len(), BIG_KB * 1024, "{who}: big_output length");
    assert!(big == big_text(BIG_KB), "{who}: big_output text differs");

    // slow_stream: every progress notification and log message, in order, before the result.
    assert_eq!(
        call_text(step_ok(out, 4)),
        format!("streamed {CHUNKS} chunks")
    );
    let during = |method: &str| -> Vec<Value> {
        out["notifications"]
            .as_array()
            .expect("notifications")
            .iter()
            .filter(|n| n["step"] == 4 && n["method"] == method)
            .cloned()
            .collect()
    };
    let progress = during("notifications/progress");
    let steps: Vec<f64> = progress
        .iter()
        .filter_map(|n| n["params"]["progress"].as_f64())
        .collect();
    let want: Vec<f64> = (1..=CHUNKS).map(|i| i as f64).collect();
    assert_eq!(steps, want, "{who}: progress notifications {progress:?}");
    let logs: Vec<String> = during("notifications/message")
        .iter()
        .filter_map(|n| n["params"]["data"].as_str().map(str::to_owned))
        .collect();
    let want_logs: Vec<String> = (1..=CHUNKS).map(|i| format!("chunk {i}")).collect();
    assert_eq!(logs, want_logs, "{who}: log messages");
    // They trickled: a proxy that buffered the SSE answer would deliver them in one burst.
    // (Only one delay is required of the four, for a loaded machine.)
    let at = |n: &Value| n["at_ms"].as_u64().expect("at_ms");
    let spread = at(&progress[progress.len() - 1]) - at(&progress[0]);
    assert!(
        spread >= CHUNK_DELAY_MS,
        "{who}: {CHUNKS} progress notifications {CHUNK_DELAY_MS} ms apart arrived within {spread} ms"
    );

    assert_eq!(call_text(step_ok(out, 5)), "list_issues changed", "{who}");
    step_ok(out, 6);
    assert_eq!(
        tool(step_ok(out, 7), "list_issues")["description"],
        RUG_PULLED_DESCRIPTION,
        "{who}: tools/list after the rug pull"
    );
    assert_eq!(
        step_ok(out, 8)["contents"][0]["uri"],
        "repo://octo/hello/README.md",
        "{who}"
    );
    assert!(
        step_ok(out, 9)["messages"][0]["content"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Triage issue 7")),
        "{who}: prompt {}",
        step_ok(out, 9)
    );

    // The server saw each message of the session, in order.
    let rpc: Vec<String> = server
        .rpc()
        .into_iter()
        .map(|(m, n)| match n {
            Some(n) => format!("{m} {n}"),
            None => m,
        })
        .filter(|m| m != "server/discover")
        .collect();
    let expected = [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call list_issues",
        "tools/call create_issue",
        "tools/call big_output",
        "tools/call slow_stream",
        "tools/call rug_pull",
        "tools/list",
        "resources/read repo://octo/hello/README.md",
        "prompts/get triage",
    ];
    assert_eq!(
        rpc, expected,
        "{who}: JSON-RPC messages the server received"
    );
    let created = server.calls_of("create_issue");
    assert_eq!(
        created[0]["rpc"][0]["arguments"]["title"], "Bug",
        "{who}: the call's arguments arrived"
    );

    let session = out["session_id"].as_str().expect("session id");
    let requests = server.requests();
    for r in &requests {
        assert_eq!(r["path"], MCP_PATH, "{who}: {r}");
        let first =
            r["rpc"][0]["method"] == "initialize" || r["rpc"][0]["method"] == "server/discover";
        if !first {
            assert_eq!(
                r["headers"]["mcp-session-id"], session,
                "{who}: every request after initialize carries the session: {r}"
            );
            assert_eq!(
                r["headers"]["mcp-protocol-version"], "2025-11-25",
                "{who}: {r}"
            );
        }
        // Through AgentGate the server names the real host, and AgentGate's Via is on it.
        assert_eq!(r["sni"].is_string(), proxied, "{who}: SNI {r}");
        assert_eq!(
            r["headers"]["via"]
                .as_str()
                .is_some_and(|v| v.contains("agentgate-")),
            proxied,
            "{who}: Via {r}"
        );
    }
    // The GET stream (server-to-client messages) and the closing DELETE.
    for method in ["GET", "DELETE"] {
        assert!(
            requests.iter().any(|r| r["method"] == method),
            "{who}: no {method} reached the server"
        );
    }
    if client == McpClient::Python {
        // The mcp 2.x client first probes for a 2026-07-28 server; this handshake-era
        // server refuses it (400, no session) and the client falls back to initialize.
        let probe = &requests[0];
        assert_eq!(probe["rpc"][0]["method"], "server/discover", "{probe}");
        assert_eq!(probe["headers"]["mcp-method"], "server/discover", "{probe}");
        assert_eq!(
            probe["headers"]["mcp-protocol-version"], "2026-07-28",
            "{probe}"
        );
    }
}

async fn through_agentgate(client: McpClient) {
    let env = TestEnv::new().await;
    let server = McpServer::start(&env, Answers::Sse).await;
    let proxy = start_proxy(&env, &server);
    let out = run_script(
        client,
        &server.url(),
        Via::Proxy(&proxy),
        &session_steps(),
        &[],
    )
    .await;
    assert_session(client, &out, &server, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_session_through_agentgate() {
    through_agentgate(McpClient::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_session_through_agentgate() {
    through_agentgate(McpClient::Python).await;
}

/// The peers themselves, with no proxy between them (the client trusts the test upstream CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_sessions_direct() {
    let env = TestEnv::new().await;
    for method in ["POST", "GET", "DELETE"] {
        env.sent_directly(method, MCP_PATH);
    }
    for client in McpClient::ALL {
        // A server each: the rug pull changes the tool for every session of a server.
        let server = McpServer::start(&env, Answers::Sse).await;
        let ca = env.pki.upstream_ca_path.clone();
        let out = run_script(
            client,
            &server.direct_url(),
            Via::Direct(&ca),
            &session_steps(),
            &[],
        )
        .await;
        assert_session(client, &out, &server, false);
    }
}

/// A server answering POSTs with application/json instead of an SSE stream works through
/// AgentGate too (the call's progress notifications are not sent then: the SDK drops them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_through_agentgate() {
    let env = TestEnv::new().await;
    let server = McpServer::start(&env, Answers::Json).await;
    let proxy = start_proxy(&env, &server);
    let steps = json!([
        {"op": "list"},
        call("list_issues", json!({"owner": "octo", "repo": "hello"})),
        call("big_output", json!({"kb": BIG_KB})),
        call("slow_stream", json!({"chunks": 2, "delay_ms": 50})),
    ]);
    for client in McpClient::ALL {
        let out = run_script(client, &server.url(), Via::Proxy(&proxy), &steps, &[]).await;
        let who = client.name();
        assert_eq!(out["connect"]["ok"], true, "{who}: {out}");
        assert!(tool(step_ok(&out, 0), "list_issues").is_object());
        assert!(call_text(step_ok(&out, 1)).contains("octo/hello"), "{who}");
        assert!(
            call_text(step_ok(&out, 2)) == big_text(BIG_KB),
            "{who}: big_output"
        );
        assert_eq!(call_text(step_ok(&out, 3)), "streamed 2 chunks", "{who}");
        let posts: Vec<&Value> = out["http"]
            .as_array()
            .expect("http")
            .iter()
            .filter(|h| h["method"] == "POST" && h["status"] == 200)
            .collect();
        assert!(
            posts.iter().all(|h| h["response_headers"]["content-type"]
                .as_str()
                .is_some_and(|c| c.starts_with("application/json"))),
            "{who}: every answered POST is application/json: {posts:?}"
        );
    }
    assert_eq!(server.calls_of("big_output").len(), 2);
}
