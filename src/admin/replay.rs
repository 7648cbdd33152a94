//! Changing policy safely over the admin API: `POST /api/v1/policy/replay` (the recorded
//! traffic decided again by a candidate policy, for the dashboard) and `GET
//! /api/v1/budgets` (each action budget's use against its limit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Extension;
use axum::extract::{Query, Request, State};
use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Scope;
use super::reply::{ErrorBody, Reply, bad_request, blocking, error, json_value};
use super::request::parse_json;
use super::state::Admin;
use crate::policy::replay::{self, Filter, Log};
use crate::policy::{Policy, Sources};

/// One replay at a time: each reads the whole log.
static REPLAYING: AtomicBool = AtomicBool::new(false);
/// Longest a replay over the API may run.
const REPLAY_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// `POST /api/v1/policy/replay`: the candidate as files, or (instance token only) a
/// directory on the proxy's machine.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// The candidate's files by name (`*.rego`, `*.json` data).
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// A candidate policy directory on the proxy's machine (instance token only).
    dir: Option<String>,
    /// Only records this recent, e.g. `7d`.
    since: Option<String>,
    /// Only this agent's records (name or SPIFFE ID).
    agent: Option<String>,
    /// Only this tenant's records (instance token only; a tenant's token sees its own).
    tenant: Option<String>,
}

/// Decides the audit log's recorded requests again with a candidate policy and reports
/// what would change (the log must verify). Sends nothing and changes nothing.
#[utoipa::path(post, path = "/api/v1/policy/replay", tag = "policy", request_body = ReplayBody,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replay(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let expected = r#"{"files"?: {"name.rego": "…"}, "dir"?, "since"?, "agent"?, "tenant"?}"#;
    let ask: ReplayBody = match parse_json(req, expected).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let tenant = match (scope.tenant(), ask.tenant) {
        (Some(own), Some(other)) if own != other => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a tenant's token replays its own records only",
            );
        }
        (Some(own), _) => Some(own.to_owned()),
        (None, t) => t,
    };
    let since_us = match ask
        .since
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
    {
        Ok(ago) => ago.map(|ago| crate::clock::now_micros() - ago.as_micros() as i64),
        Err(e) => {
            return bad_request(&format!(
                "since: {e}; expected a duration such as 7d or 12h"
            ));
        }
    };
    let sources = match (ask.dir, ask.files.is_empty()) {
        (Some(_), false) => return bad_request("give the candidate as files or as dir, not both"),
        (None, true) => return bad_request("give the candidate policy: files {name: text} or dir"),
        (Some(_), true) if scope.tenant().is_some() => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "dir is for the instance token; send files",
            );
        }
        (Some(dir), true) => match Sources::read_dir(std::path::Path::new(&dir)) {
            Ok(s) => s,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad_policy",
                    &e.to_string(),
                );
            }
        },
        (None, false) => Sources::from_files(ask.files),
    };
    let candidate = match Policy::from_sources(&sources, &admin.config.policy) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_policy",
                &e.to_string(),
            );
        }
    };
    if REPLAYING.swap(true, Ordering::AcqRel) {
        return error(
            StatusCode::CONFLICT,
            "busy",
            "a replay is already running; try again when it is done",
        );
    }
    let filter = Filter {
        since_us,
        tenant,
        agent: ask.agent,
    };
    let log = Log::in_state(&admin.state, &admin.config.audit);
    let state = admin.state.clone();
    let done = blocking("replay_failed", move || {
        let owners = replay::owners(&state);
        // One core, two minutes: the proxy keeps serving while it runs.
        let limits = replay::Limits {
            workers: 1,
            within: Some(REPLAY_WITHIN),
        };
        replay::replay_within(&log, &candidate, &filter, &owners, &|_, _| {}, &limits)
    })
    .await;
    REPLAYING.store(false, Ordering::Release);
    match done {
        Ok(Ok(report)) => json_value(StatusCode::OK, &report),
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "replay_refused",
            &e.to_string(),
        ),
        Err(resp) => resp,
    }
}

/// `GET /api/v1/budgets` parameters.
#[derive(Deserialize, Default)]
pub struct BudgetsQuery {
    /// Only keys naming this agent (its SPIFFE ID).
    agent: Option<String>,
}

/// Each action budget's use against its limit (a tenant's token sees its tenant's keys).
#[utoipa::path(get, path = "/api/v1/budgets", tag = "policy",
    params(("agent" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
pub async fn budgets(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<BudgetsQuery>,
) -> Reply {
    let now_ms = crate::clock::now_micros() / 1000;
    let mut usage = admin.budgets.usage(now_ms, q.agent.as_deref()).await;
    if let Some(t) = scope.tenant() {
        let own = format!("tenant:{t}");
        usage.retain(|u| u.key.first() == Some(&own));
    }
    json_value(StatusCode::OK, &serde_json::json!({ "budgets": usage }))
}
