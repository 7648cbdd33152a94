//! `GET /api/v1/events`: committed audit records as server-sent events, `id` = the record's
//! `seq`, so a client resumes exactly with `Last-Event-ID`. Each subscriber has a small
//! buffer; one that cannot keep up is disconnected (it reconnects with its last id) rather
//! than allowed to grow memory. Browsers' `EventSource` cannot send headers, so the route
//! also takes a single-use ticket from `POST /api/v1/events/ticket`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::response::sse::Event;
use http::StatusCode;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, watch};
use utoipa::ToSchema;

use super::auth::{self, Scope};
use super::reply::{ErrorBody, Reply, bad_request, error, json_value, sse_reply, unauthorized};
use super::request::{bearer, query_param};
use super::state::{Admin, MAX_STREAMS};

/// Events buffered per subscriber before it counts as too slow.
const CLIENT_BUFFER: usize = 256;
/// Most records `?backlog=N` replays.
const MAX_BACKLOG: i64 = 500;
/// Records read per page while replaying.
const PAGE: i64 = 200;
/// How long a replayed event may wait for a slow subscriber.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A single-use ticket for `GET /api/v1/events?ticket=…`.
#[derive(Serialize, ToSchema)]
pub struct Ticket {
    pub ticket: String,
    /// Seconds it stays usable.
    pub expires_in: u64,
}

/// Get a single-use, 30-second ticket for the event stream (for `EventSource`).
#[utoipa::path(post, path = "/api/v1/events/ticket", tag = "events",
    responses((status = 200, body = Ticket), (status = 401, body = ErrorBody)))]
pub async fn ticket(State(admin): State<Arc<Admin>>, Extension(scope): Extension<Scope>) -> Reply {
    match admin.auth.ticket(&scope) {
        Ok(ticket) => json_value(
            StatusCode::OK,
            &Ticket {
                ticket,
                expires_in: auth::TICKET_TTL.as_secs(),
            },
        ),
        Err(e) => e.into_response(),
    }
}

/// Committed audit records as server-sent events (`event: record`, `id: <seq>`, `data:
/// {"seq","hash","record"}`), filtered to the caller's tenant. Authenticate with the
/// `Authorization` header or `?ticket=`. Resume with `Last-Event-ID` (or
/// `?last_event_id=`); `?backlog=N` (≤ 500) replays the newest N first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(
        ("ticket" = Option<String>, Query, description = "single-use ticket instead of the Authorization header"),
        ("last_event_id" = Option<u64>, Query, description = "resume after this seq (same as the Last-Event-ID header)"),
        ("backlog" = Option<u32>, Query, description = "replay the newest N records first (max 500)"),
        ("scope" = Option<String>, Query, description = "`fleet`: every instance's records from the fleet's stream; ids are stream sequences"),
    ),
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stream(State(admin): State<Arc<Admin>>, req: Request) -> Reply {
    let query = req.uri().query();
    let scope = match (bearer(&req), query_param(query, "ticket")) {
        (Some(token), _) => admin.auth.bearer(&token),
        (None, Some(ticket)) => admin.auth.redeem(&ticket),
        (None, None) => None,
    };
    let Some(scope) = scope else {
        return unauthorized(
            "send Authorization: Bearer <token>, or ?ticket= from POST /api/v1/events/ticket (tickets work once, for 30 s)",
        );
    };
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(query, "last_event_id"));
    let start = match (resume, query_param(query, "backlog")) {
        (Some(id), _) => match id.trim().parse::<i64>() {
            Ok(seq) if seq >= 0 => Start::After(seq),
            _ => return bad_request("Last-Event-ID must be a record seq (a number)"),
        },
        (None, Some(n)) => match n.parse::<i64>() {
            Ok(n) if (0..=MAX_BACKLOG).contains(&n) => Start::Backlog(n),
            _ => return bad_request("backlog must be a number from 0 to 500"),
        },
        (None, None) => Start::Live,
    };
    let Some(permit) = admin.streams.acquire(&scope) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            &format!(
                "at most {MAX_STREAMS} event streams at once for this token's scope; close one and retry"
            ),
        );
    };
    match super::fleet_audit::wanted(query) {
        Ok(false) => {}
        Ok(true) => {
            let from = match start {
                Start::Live => super::fleet_audit::From::Live,
                Start::After(seq) => super::fleet_audit::From::After(seq as u64),
                Start::Backlog(n) => super::fleet_audit::From::Backlog(n as u64),
            };
            return super::fleet_audit::events(admin, scope, from, permit).await;
        }
        Err(r) => return r,
    }
    // Subscribe before replaying, so nothing committed in between is missed.
    let live = admin.audit.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(feed(admin.clone(), scope, start, live, tx, permit));
    sse_reply(rx)
}

enum Start {
    Live,
    After(i64),
    Backlog(i64),
}

type Tx = mpsc::Sender<Result<Event, Infallible>>;

fn event(seq: u64, hash: &str, record: &str) -> Result<Event, Infallible> {
    // `record` is canonical JSON (one line) and `hash` is hex, so this is valid JSON.
    let data = format!(r#"{{"seq":{seq},"hash":"{hash}","record":{record}}}"#);
    Ok(Event::default()
        .id(seq.to_string())
        .event("record")
        .data(data))
}

async fn feed(
    admin: Arc<Admin>,
    scope: Scope,
    start: Start,
    mut live: broadcast::Receiver<Arc<crate::audit::Committed>>,
    tx: Tx,
    _permit: OwnedSemaphorePermit,
) {
    let mut shutdown = admin.streams.shutdown.clone();
    let tenant: Option<String> = scope.tenant().map(str::to_owned);
    // The live channel holds only records committed after subscribing; replayed ones may
    // appear in both, hence `sent`.
    let mut sent: u64 = match start {
        Start::Live => 0,
        Start::After(seq) => seq as u64,
        Start::Backlog(n) => {
            let Some(rows) = read(&admin, tenant.clone(), Page::Before(i64::MAX, n)).await else {
                return;
            };
            let mut last = 0;
            for (seq, record, hash) in rows {
                if !send(&tx, event(seq, &hash, &record)).await {
                    return;
                }
                last = seq;
            }
            last
        }
    };
    if let Start::After(_) = start {
        loop {
            let Some(rows) = read(&admin, tenant.clone(), Page::After(sent as i64, PAGE)).await
            else {
                return;
            };
            let done = (rows.len() as i64) < PAGE;
            for (seq, record, hash) in rows {
                if !send(&tx, event(seq, &hash, &record)).await {
                    return;
                }
                sent = seq;
            }
            if done {
                break;
            }
        }
    }
    match forward(&mut live, &tx, &scope, sent, &mut shutdown).await {
        Ended::TooSlow(seq) => tracing::info!(
            seq,
            "event stream consumer too slow; disconnected (it may resume with Last-Event-ID)"
        ),
        Ended::Lagged(missed) => tracing::info!(
            missed,
            "event stream fell behind the audit log; disconnected (it may resume with Last-Event-ID)"
        ),
        Ended::Closed => {}
    }
}

/// Why a live stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The subscriber went away, or the instance is shutting down.
    Closed,
    /// Its buffer was full when this seq was committed.
    TooSlow(u64),
    /// The audit broadcast overtook it by this many records.
    Lagged(u64),
}

/// Passes live records the subscriber may see, never waiting for it: a full buffer ends
/// the stream, so a slow reader costs at most [`CLIENT_BUFFER`] events of memory.
async fn forward(
    live: &mut broadcast::Receiver<Arc<crate::audit::Committed>>,
    tx: &Tx,
    scope: &Scope,
    mut sent: u64,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    loop {
        let next = tokio::select! {
            e = live.recv() => e,
            _ = shutdown.changed() => return Ended::Closed,
            _ = tx.closed() => return Ended::Closed,
        };
        match next {
            Ok(c) => {
                if c.seq <= sent || !scope.sees(c.tenant.as_deref()) {
                    continue;
                }
                sent = c.seq;
                match tx.try_send(event(c.seq, &c.hash, &c.record)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => return Ended::TooSlow(c.seq),
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ended::Closed,
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => return Ended::Lagged(missed),
            Err(broadcast::error::RecvError::Closed) => return Ended::Closed,
        }
    }
}

/// Sends a replayed event, giving up on a subscriber that does not read.
async fn send(tx: &Tx, ev: Result<Event, Infallible>) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, tx.send(ev)).await,
        Ok(Ok(()))
    )
}

/// A page of the audit log, with at most `limit` rows.
pub(super) enum Page {
    /// Oldest first, after this seq.
    After(i64, i64),
    /// Newest first, before this seq.
    Before(i64, i64),
}

/// Committed rows `(seq, record, hash)` visible to `tenant` (None: all), in the page's
/// order, across the log's segments (archived ones under `archive`). Shared by the stream's
/// replay and `GET /api/v1/audit`.
pub(super) fn rows(
    db: &std::path::Path,
    archive: Option<&std::path::Path>,
    tenant: Option<&str>,
    page: Page,
) -> rusqlite::Result<Vec<(u64, String, String)>> {
    let view = crate::audit::view::View::open(db, archive)?;
    let filter = "(?3 IS NULL OR json_extract(record, '$.tenant') = ?3)";
    let read = |part: &crate::audit::view::Part<'_>, sql: &str, from: u64, left: usize| {
        let mut stmt = part.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(
            rusqlite::params![from as i64, left as i64, tenant, part.lower as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    };
    match page {
        Page::After(seq, limit) => {
            let sql = format!(
                "SELECT seq, record, hash FROM records WHERE seq > ?1 AND seq > ?4 AND {filter} ORDER BY seq LIMIT ?2"
            );
            let after = seq.max(0) as u64;
            view.page_after(after, limit.max(0) as usize, |part, left| {
                read(part, &sql, after, left)
            })
        }
        Page::Before(seq, limit) => {
            let sql = format!(
                "SELECT seq, record, hash FROM records WHERE seq < ?1 AND seq > ?4 AND {filter} ORDER BY seq DESC LIMIT ?2"
            );
            let before = seq.max(0) as u64;
            view.page_before(before, limit.max(0) as usize, |part, left| {
                read(part, &sql, before, left)
            })
        }
    }
}

/// Rows for the stream, oldest first; a read failure ends the stream (logged).
async fn read(
    admin: &Admin,
    tenant: Option<String>,
    page: Page,
) -> Option<Vec<(u64, String, String)>> {
    let db = admin.audit.db_path().to_owned();
    let archive = admin.audit.archive().map(ToOwned::to_owned);
    let read = move || {
        let mut rows = rows(&db, archive.as_deref(), tenant.as_deref(), page)?;
        rows.sort_by_key(|r| r.0);
        Ok::<_, rusqlite::Error>(rows)
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(rows)) => Some(rows),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "event stream: reading the audit log failed");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Committed;

    fn committed(seq: u64, tenant: Option<&str>) -> Arc<Committed> {
        Arc::new(Committed {
            seq,
            hash: "00".into(),
            record: "{}".into(),
            tenant: tenant.map(Arc::from),
            ts: 0,
        })
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped_at_its_buffer() {
        let (btx, mut live) = broadcast::channel(4 * CLIENT_BUFFER);
        let (tx, mut rx) = mpsc::channel(CLIENT_BUFFER);
        let (_stop, mut shutdown) = watch::channel(false);
        for seq in 1..=(CLIENT_BUFFER as u64 + 10) {
            btx.send(committed(seq, None)).unwrap();
        }
        let ended = forward(&mut live, &tx, &Scope::Instance, 0, &mut shutdown).await;
        assert_eq!(ended, Ended::TooSlow(CLIENT_BUFFER as u64 + 1));
        drop(tx);
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, CLIENT_BUFFER, "memory stays at the buffer");
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_dropped_and_others_tenants_are_filtered() {
        let (btx, mut live) = broadcast::channel(2);
        let (tx, mut rx) = mpsc::channel(CLIENT_BUFFER);
        let (_stop, mut shutdown) = watch::channel(false);
        for seq in 1..=3 {
            btx.send(committed(seq, Some("acme"))).unwrap();
        }
        let acme = Scope::Tenant("acme".into());
        assert_eq!(
            forward(&mut live, &tx, &acme, 0, &mut shutdown).await,
            Ended::Lagged(1)
        );

        let (btx, mut live) = broadcast::channel(16);
        btx.send(committed(1, Some("globex"))).unwrap();
        btx.send(committed(2, None)).unwrap();
        btx.send(committed(3, Some("acme"))).unwrap();
        btx.send(committed(3, Some("acme"))).unwrap();
        drop(btx);
        assert_eq!(
            forward(&mut live, &tx, &acme, 0, &mut shutdown).await,
            Ended::Closed
        );
        drop(tx);
        let mut got = 0;
        while rx.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(got, 1, "only acme's record, once");
    }
}
