//! `scope=fleet` on the audit routes: the records every instance of the fleet shipped to
//! its stream, read through [`crate::fleet::view`], filtered to the caller's tenant as the
//! local routes are. Cursors are stream sequences (`stream_seq`), not one log's `seq`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event;
use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::auth::Scope;
use super::reply::{Reply, bad_request_code, error, json_value, sse_reply};
use super::state::Admin;
use crate::fleet::view::{FleetRecord, View};

/// Events buffered per subscriber before it counts as too slow.
const CLIENT_BUFFER: usize = 256;

/// Whether the query asks for the fleet's records.
pub fn wanted(query: Option<&str>) -> Result<bool, Reply> {
    match super::request::query_param(query, "scope").as_deref() {
        None | Some("instance") => Ok(false),
        Some("fleet") => Ok(true),
        Some(other) => Err(bad_request_code(
            "bad_scope",
            &format!("scope must be `instance` or `fleet`, not `{other}`"),
        )),
    }
}

/// The fleet's view, or the refusal for an instance not in a fleet.
fn view(admin: &Admin) -> Result<&Arc<View>, Reply> {
    admin.fleet.as_ref().ok_or_else(|| {
        bad_request_code(
            "not_in_a_fleet",
            "scope=fleet needs [fleet] in the configuration: this instance is not in a fleet",
        )
    })
}

fn unavailable(e: impl std::fmt::Display) -> Reply {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "fleet_unavailable",
        &format!("cannot read the fleet's audit stream: {e}"),
    )
}

/// `GET /api/v1/audit?scope=fleet&after=STREAM_SEQ&limit=N`.
pub async fn page(admin: &Admin, scope: &Scope, after: Option<i64>, limit: i64) -> Reply {
    let view = match view(admin) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let after = after.unwrap_or(0).max(0) as u64;
    match view.page(scope.tenant(), after, limit as usize).await {
        Ok(records) => {
            let next = records.last().map_or(after, |r| r.stream_seq);
            json_value(
                StatusCode::OK,
                &serde_json::json!({ "records": records, "next_after": next }),
            )
        }
        Err(e) => unavailable(e),
    }
}

/// `GET /api/v1/audit/{stream_seq}?scope=fleet`.
pub async fn record(admin: &Admin, scope: &Scope, seq: i64) -> Reply {
    let view = match view(admin) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match view.get(scope.tenant(), seq.max(0) as u64).await {
        Ok(Some(r)) => json_value(StatusCode::OK, &r),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no record {seq} in the fleet's audit stream"),
        ),
        Err(e) => unavailable(e),
    }
}

/// Where a fleet event stream starts.
pub enum From {
    /// After this stream sequence (`Last-Event-ID`).
    After(u64),
    /// The newest N stream messages (those the caller may see among them).
    Backlog(u64),
    /// From the next record on.
    Live,
}

/// `GET /api/v1/events?scope=fleet`: `event: record`, `id: <stream_seq>`, `data:
/// {"stream_seq","log_id","seq","hash","record"}`.
pub async fn events(
    admin: Arc<Admin>,
    scope: Scope,
    from: From,
    permit: OwnedSemaphorePermit,
) -> Reply {
    let view = match view(&admin) {
        Ok(v) => v.clone(),
        Err(r) => return r,
    };
    let last = match view.last().await {
        Ok(last) => last,
        Err(e) => return unavailable(e),
    };
    let start = match from {
        From::After(seq) => seq + 1,
        From::Backlog(n) => (last + 1).saturating_sub(n),
        From::Live => last + 1,
    };
    let mut follow = match view.follow(scope.tenant(), start).await {
        Ok(f) => f,
        Err(e) => return unavailable(e),
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(CLIENT_BUFFER);
    let mut shutdown = admin.streams.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let next = tokio::select! {
                n = follow.next() => n,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            };
            let record: FleetRecord = match next {
                Some((Ok(r), _)) => r,
                Some((Err(e), _)) => {
                    tracing::warn!(error = %e, "fleet event stream: a bad message; stream ended");
                    return;
                }
                None => return,
            };
            let data = serde_json::to_string(&record).unwrap_or_default();
            let event = Event::default()
                .id(record.stream_seq.to_string())
                .event("record")
                .data(data);
            // A reader that does not keep up is dropped; it resumes with Last-Event-ID.
            if tx.try_send(Ok(event)).is_err() {
                return;
            }
        }
    });
    sse_reply(rx)
}
