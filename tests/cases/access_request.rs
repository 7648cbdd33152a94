//! AuthZEN Access Request and Approval Profile on the PDP: an escalation is a requestable
//! denial; the access request becomes a consent a person answers (CLI, admin API); the
//! approval makes the identical evaluation true for its window, and false again after.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestEnv;
use crate::support::admin::{AdminResp, curl, curl_with};
use crate::support::cli::agentgate;
use crate::support::proxy::{Proxy, toml_str};
use crate::support::read_records;

const AGENT: &str = "spiffe://agentgate.local/agent/bot";

/// A PDP request for `action` (`class` as the catalog would say) on `repo`.
fn evaluation(action: &str, class: &str, repo: &str) -> Value {
    json!({
        "subject": {"type": "agent", "id": AGENT, "properties": {"name": "bot", "owner": "alice"}},
        "action": {"name": action, "properties": {"class": class, "known": true}},
        "resource": {"type": "github.repo", "id": repo,
                     "properties": {"owner": repo.split('/').next().unwrap(),
                                    "repo": repo.split('/').nth(1).unwrap()}},
        "context": {"host": "api.github.com"},
    })
}

struct Pdp<'a> {
    proxy: &'a Proxy,
    token: String,
}

impl Pdp<'_> {
    async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> AdminResp {
        let body = body.to_string();
        curl_with(
            self.proxy,
            "POST",
            path,
            Some(&self.token),
            Some("application/json"),
            Some(&body),
            headers,
        )
        .await
    }

    async fn evaluate(&self, body: &Value) -> Value {
        let r = self.post("/access/v1/evaluation", body, &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body
    }

    async fn get(&self, path: &str) -> AdminResp {
        curl(self.proxy, "GET", path, Some(&self.token), None, None).await
    }
}

/// The access request a PEP submits for a requestable denial `d` of `eval`.
fn submission(eval: &Value, d: &Value) -> Value {
    let mut context = eval["context"].clone();
    context["business_justification"] = "triage the flaky CI issue".into();
    json!({
        "subject": eval["subject"],
        "action": eval["action"],
        "resource": eval["resource"],
        "context": context,
        "denial": {
            "evaluation_id": d["context"]["evaluation_id"],
            "evaluated_at": d["context"]["evaluated_at"],
            "expires_at": d["context"]["access_request"]["expires_at"],
            "reason": d["context"]["reason"],
            "template": d["context"]["access_request"]["template"],
        },
    })
}

fn problem_type(r: &AdminResp) -> String {
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json")),
        "{r:?}"
    );
    r.body["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("urn:openid:authzen:access-request:error:")
        .to_owned()
}

/// Escalate → access request → approve → true for the window → false again; deny is not
/// requestable; bindings, idempotency keys, presented approvals, cancellation and PANIC
/// are checked the profile's way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_is_requestable_and_its_approval_opens_a_window() {
    let env = TestEnv::new().await;
    let proxy = env.start(
        env.with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("consent", "mode", &toml_str("async")),
    );
    let pdp = Pdp {
        proxy: &proxy,
        token: proxy.admin_token(),
    };
    let base = format!("http://{}", proxy.admin_addr);

    // Discovery names the endpoint and the capability.
    let d = curl(
        &proxy,
        "GET",
        "/.well-known/authzen-configuration",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(
        d.body["access_request_endpoint"],
        format!("{base}/access/v1/requests")
    );
    assert_eq!(
        d.body["capabilities"],
        json!(["urn:openid:authzen:capability:access-request"])
    );

    // A deny is not requestable.
    let delete = pdp
        .evaluate(&evaluation("github.repos.delete", "delete", "acme/web"))
        .await;
    assert_eq!(delete["decision"], false, "{delete}");
    assert!(
        delete["context"].get("access_request").is_none(),
        "{delete}"
    );

    // An escalation is.
    let eval = evaluation("github.issues.create", "write", "acme/web");
    let denied = pdp.evaluate(&eval).await;
    assert_eq!(denied["decision"], false, "{denied}");
    let ctx = &denied["context"];
    assert_eq!(ctx["agentgate"]["effect"], "escalate", "{denied}");
    assert_eq!(ctx["reason"], "approval_required", "{denied}");
    assert!(
        ctx["evaluation_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("eval_")),
        "{denied}"
    );
    assert_eq!(
        ctx["access_request"]["endpoint"],
        format!("{base}/access/v1/requests"),
        "{denied}"
    );
    assert!(ctx["access_request"]["expires_at"].is_string(), "{denied}");

    // Submissions that do not bind to the denial are refused with the profile's problems.
    let good = submission(&eval, &denied);
    let mut other_repo = good.clone();
    other_repo["resource"] = evaluation("x", "write", "acme/secrets")["resource"].clone();
    let mut changed_context = good.clone();
    changed_context["context"]["host"] = "api.evil.example".into();
    let mut unknown = good.clone();
    unknown["denial"]["evaluation_id"] = "eval_00".into();
    let mut wrong_expiry = good.clone();
    wrong_expiry["denial"]["expires_at"] = "2099-01-01T00:00:00Z".into();
    let mut bundle = good.clone();
    bundle["items"] = json!([{"resource": eval["resource"], "action": eval["action"]}]);
    for (what, body, kind) in [
        ("another resource", &other_repo, "invalid_denial_binding"),
        (
            "a changed context member",
            &changed_context,
            "invalid_denial_binding",
        ),
        ("an unknown evaluation", &unknown, "invalid_denial_binding"),
        (
            "another expires_at",
            &wrong_expiry,
            "invalid_denial_binding",
        ),
        ("a bundle", &bundle, "not_requestable"),
    ] {
        let r = pdp.post("/access/v1/requests", body, &[]).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert_eq!(problem_type(&r), kind, "{what}: {r:?}");
    }

    let mut callback = good.clone();
    callback["callback"] = json!({"endpoint": "https://pep.example/cb"});
    let r = pdp.post("/access/v1/requests", &callback, &[]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body["reason"]
            .as_str()
            .is_some_and(|m| m.contains("webhooks")),
        "{r:?}"
    );

    // The request: a task, pending, and a consent like a held request's.
    let key = [("Idempotency-Key", "k-1"), ("X-Request-ID", "rq-42")];
    let r = pdp.post("/access/v1/requests", &good, &key).await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.header("x-request-id").as_deref(), Some("rq-42"), "{r:?}");
    let task = r.body["task"].clone();
    let id = task["id"].as_str().expect("task id").to_owned();
    assert_eq!(task["status"], "pending", "{r:?}");
    assert_eq!(
        task["status_endpoint"],
        format!("{base}/access/v1/requests/{id}")
    );
    assert_eq!(
        r.header("location").as_deref(),
        task["status_endpoint"].as_str()
    );
    // The same key and body: the same task; the same key, another body: refused.
    let again = pdp.post("/access/v1/requests", &good, &key).await;
    assert_eq!(again.body["task"]["id"], id.as_str(), "{again:?}");
    let mut changed = good.clone();
    changed["context"]["business_justification"] = "something else".into();
    let dup = pdp.post("/access/v1/requests", &changed, &key).await;
    assert_eq!(dup.status, 409, "{dup:?}");
    assert_eq!(problem_type(&dup), "duplicate_request");

    let consent = pdp.get(&format!("/api/v1/consents/{id}")).await;
    assert_eq!(consent.status, 200, "{consent:?}");
    assert_eq!(consent.body["agent"], AGENT, "{consent:?}");
    assert_eq!(consent.body["action"], "github.issues.create");
    assert_eq!(consent.body["status"], "pending");
    let polled = pdp.get(&format!("/access/v1/requests/{id}")).await;
    assert_eq!(polled.body["task"]["status"], "pending", "{polled:?}");
    // Still pending: the identical evaluation is still false.
    assert_eq!(pdp.evaluate(&eval).await["decision"], false);

    // A person approves it for a short window, from the CLI.
    let out = agentgate(
        &proxy.home,
        &["consent", "approve", &id, "--for", "3s"],
        &[("USER", "alice")],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let done = pdp.get(&format!("/access/v1/requests/{id}")).await;
    assert_eq!(done.body["task"]["status"], "approved", "{done:?}");
    let result = &done.body["result"];
    assert_eq!(result["mode"], "reevaluate", "{done:?}");
    let approval = result["approval"].clone();
    assert!(approval["approved_until"].is_string(), "{done:?}");

    // Re-evaluation: the identical tuple is true, with or without the approval presented.
    let yes = pdp.evaluate(&eval).await;
    assert_eq!(yes["decision"], true, "{yes}");
    assert_eq!(yes["context"]["approval"]["id"], approval["id"], "{yes}");
    let mut presented = eval.clone();
    presented["context"]["approval"] = approval.clone();
    let yes = pdp.evaluate(&presented).await;
    assert_eq!(yes["decision"], true, "{yes}");
    // The approval covers that tuple only.
    let mut elsewhere = evaluation("github.issues.create", "write", "acme/api");
    elsewhere["context"]["approval"] = approval.clone();
    let no = pdp.evaluate(&elsewhere).await;
    assert_eq!(no["decision"], false, "{no}");
    assert_eq!(no["context"]["reason"], "out_of_scope", "{no}");
    assert_eq!(no["context"]["next_action"], "request", "{no}");
    assert!(no["context"]["access_request"].is_object(), "{no}");
    let mut forged = eval.clone();
    forged["context"]["approval"] = json!({"id": "apr_0123456789abcdef"});
    let no = pdp.evaluate(&forged).await;
    assert_eq!(no["decision"], false, "{no}");
    assert_eq!(no["context"]["reason"], "approval_unverifiable", "{no}");
    assert_eq!(no["context"]["next_action"], "none", "{no}");
    // A batch re-evaluates each item the same way.
    let batch = json!({
        "subject": eval["subject"], "context": eval["context"],
        "evaluations": [
            {"action": eval["action"], "resource": eval["resource"]},
            {"action": eval["action"], "resource": elsewhere["resource"]},
        ],
    });
    let r = pdp.post("/access/v1/evaluations", &batch, &[]).await;
    assert_eq!(r.body["evaluations"][0]["decision"], true, "{r:?}");
    assert_eq!(r.body["evaluations"][1]["decision"], false, "{r:?}");

    // The window closes: false again, and requestable again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = pdp.evaluate(&eval).await;
    assert_eq!(after["decision"], false, "{after}");
    assert!(after["context"]["access_request"].is_object(), "{after}");
    let after = pdp.evaluate(&presented).await;
    assert_eq!(after["decision"], false, "{after}");
    assert_eq!(after["context"]["reason"], "approval_expired", "{after}");
    assert_eq!(after["context"]["next_action"], "request", "{after}");

    // Cancellation of a pending request; a second cancel and an unknown task refused.
    let fresh = pdp.evaluate(&eval).await;
    let r = pdp
        .post("/access/v1/requests", &submission(&eval, &fresh), &[])
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let id2 = r.body["task"]["id"].as_str().unwrap().to_owned();
    let cancel = format!("/access/v1/requests/{id2}/cancel");
    let c = pdp.post(&cancel, &json!({}), &[]).await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(c.body["task"]["status"], "cancelled", "{c:?}");
    let c = curl(&proxy, "DELETE", &cancel, Some(&pdp.token), None, None).await;
    assert_eq!(c.status, 409, "{c:?}");
    assert_eq!(problem_type(&c), "invalid_task_state");
    let u = pdp.get("/access/v1/requests/cns_00000000").await;
    assert_eq!(u.status, 404, "{u:?}");
    assert_eq!(problem_type(&u), "unknown_task");

    // A denied access request: the task says so, the evaluation stays false.
    let fresh = pdp.evaluate(&eval).await;
    let r = pdp
        .post("/access/v1/requests", &submission(&eval, &fresh), &[])
        .await;
    let id3 = r.body["task"]["id"].as_str().unwrap().to_owned();
    let out = agentgate(
        &proxy.home,
        &["consent", "deny", &id3],
        &[("USER", "alice")],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let t = pdp.get(&format!("/access/v1/requests/{id3}")).await;
    assert_eq!(t.body["task"]["status"], "denied", "{t:?}");
    assert!(t.body.get("result").is_none(), "{t:?}");
    assert_eq!(pdp.evaluate(&eval).await["decision"], false);

    // PANIC ends an approval still in force, like a proxy consent's window.
    let fresh = pdp.evaluate(&eval).await;
    let r = pdp
        .post("/access/v1/requests", &submission(&eval, &fresh), &[])
        .await;
    let id4 = r.body["task"]["id"].as_str().unwrap().to_owned();
    let out = agentgate(
        &proxy.home,
        &["consent", "approve", &id4, "--for", "10m"],
        &[("USER", "alice")],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(pdp.evaluate(&eval).await["decision"], true);
    let r = pdp
        .post(
            "/api/v1/panic",
            &json!({"all": true, "reason": "drill"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(pdp.evaluate(&eval).await["decision"], false);

    // Every transition is in the audit log like a held request's consent.
    let db = proxy.home.join("audit.db");
    let mut events = Vec::new();
    for _ in 0..100 {
        events = read_records(&db, "admin")
            .into_iter()
            .filter(|r| r["detail"]["consent_id"] == id.as_str())
            .map(|r| r["event"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>();
        if events.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events, ["consent_requested", "consent_approved"]);
}

/// A tenant's token sees its own access requests only, and a denial requested under one
/// tenant cannot be submitted under another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_requests_stay_in_their_tenant() {
    let env = TestEnv::new().await;
    let proxy = env.start(
        env.with_default_policy()
            .set("consent", "mode", &toml_str("async"))
            .set("tenants", "acme", "{}")
            .set("tenants", "beta", "{}"),
    );
    let token = |t: &str| {
        std::fs::read_to_string(proxy.home.join(format!("tenants/{t}/admin.token")))
            .expect("tenant token")
            .trim()
            .to_owned()
    };
    let acme = Pdp {
        proxy: &proxy,
        token: token("acme"),
    };
    let beta = Pdp {
        proxy: &proxy,
        token: token("beta"),
    };
    let eval = evaluation("github.issues.create", "write", "acme/web");
    let denied = acme.evaluate(&eval).await;
    assert!(denied["context"]["access_request"].is_object(), "{denied}");
    let body = submission(&eval, &denied);
    let r = beta.post("/access/v1/requests", &body, &[]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(problem_type(&r), "invalid_denial_binding");
    let r = acme.post("/access/v1/requests", &body, &[]).await;
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.body["task"]["id"].as_str().unwrap().to_owned();
    let r = beta.get(&format!("/access/v1/requests/{id}")).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = acme.get(&format!("/access/v1/requests/{id}")).await;
    assert_eq!(r.status, 200, "{r:?}");
}
