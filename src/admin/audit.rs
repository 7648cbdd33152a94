//! The audit log over the admin API: pages of records the caller may see, one record with
//! its hashes, and verification of the whole chain and its signed checkpoints.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Request, State};
use http::StatusCode;

use super::auth::Scope;
use super::events;
use super::fleet_audit;
use super::reply::{
    ErrorBody, Reply, bad_request, blocking, error, instance_only, internal, json_value,
};
use super::request::query_param;
use super::state::Admin;

/// A page of audit records the caller may see: after `after` (oldest first), or before
/// `before` (newest first).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(("after" = Option<i64>, Query), ("before" = Option<i64>, Query),
        ("limit" = Option<i64>, Query, description = "1..1000, default 100"),
        ("scope" = Option<String>, Query, description = "`fleet`: every instance's records from the fleet's stream (`after` is a stream sequence; no `before`)")),
    responses((status = 200, description = "`{\"records\": [{\"hash\",\"record\"}], \"next_after\"}`; with scope=fleet each record also has `stream_seq`, `log_id` and `seq`", body = Object)))]
pub async fn audit_page(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let query = req.uri().query();
    let number = |name| -> Result<Option<i64>, Reply> {
        match query_param(query, name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad_request(&format!("{name} must be a number"))),
        }
    };
    let (after, before, limit) = match (number("after"), number("before"), number("limit")) {
        (Ok(a), Ok(b), Ok(l)) => (a, b, l.unwrap_or(100).clamp(1, 1000)),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    match fleet_audit::wanted(query) {
        Ok(false) => {}
        Ok(true) if before.is_some() => {
            return bad_request("before is not supported with scope=fleet: page with after");
        }
        Ok(true) => return fleet_audit::page(&admin, &scope, after, limit).await,
        Err(r) => return r,
    }
    let tenant = scope.tenant().map(str::to_owned);
    let db = admin.audit.db_path().to_owned();
    let archive = admin.audit.archive().map(ToOwned::to_owned);
    let (page, from, next) = match before {
        Some(b) => (events::Page::Before(b, limit), b, "next_before"),
        None => {
            let a = after.unwrap_or(0);
            (events::Page::After(a, limit), a, "next_after")
        }
    };
    let read = move || -> Result<serde_json::Value, rusqlite::Error> {
        let rows = events::rows(&db, archive.as_deref(), tenant.as_deref(), page)?;
        let last = rows.last().map_or(from, |r| r.0 as i64);
        let records: Vec<_> = rows
            .into_iter()
            .map(|(_, record, hash)| serde_json::json!({ "hash": hash, "record": parse_record(record) }))
            .collect();
        Ok(serde_json::json!({ "records": records, next: last }))
    };
    match blocking("audit_read_failed", read).await {
        Ok(Ok(v)) => json_value(StatusCode::OK, &v),
        Ok(Err(e)) => internal("audit_read_failed", &e.to_string()),
        Err(resp) => resp,
    }
}

/// Canonical JSON re-serializes to the same bytes; a damaged row (the log was tampered
/// with) is passed on as a string rather than breaking the page.
fn parse_record(record: String) -> serde_json::Value {
    serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record))
}

/// One audit record with its hash and the previous record's hash.
#[utoipa::path(get, path = "/api/v1/audit/{seq}", tag = "audit",
    params(("seq" = i64, Path), ("scope" = Option<String>, Query, description = "`fleet`: `seq` is a stream sequence of the fleet's stream")),
    responses((status = 200, description = "`{\"seq\",\"hash\",\"prev_hash\",\"record\"}`", body = Object),
        (status = 404, body = ErrorBody)))]
pub async fn audit_record(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(seq): Path<String>,
    req: Request,
) -> Reply {
    let Ok(seq) = seq.parse::<i64>() else {
        return bad_request("seq must be a number");
    };
    match fleet_audit::wanted(req.uri().query()) {
        Ok(false) => {}
        Ok(true) => return fleet_audit::record(&admin, &scope, seq).await,
        Err(r) => return r,
    }
    let db = admin.audit.db_path().to_owned();
    let archive = admin.audit.archive().map(ToOwned::to_owned);
    let read = move || -> Result<Option<(String, String, Option<String>)>, rusqlite::Error> {
        if seq < 1 {
            return Ok(None);
        }
        // The record and the one before it, which may sit in the segment before.
        let view = crate::audit::view::View::open(&db, archive.as_deref())?;
        let rows = view.page_after(seq as u64 - 1, 1, |part, _| {
            let mut stmt = part.conn.prepare_cached(
                "SELECT r.record, r.hash, p.hash FROM records r LEFT JOIN records p ON p.seq = r.seq - 1 WHERE r.seq = ?1 AND r.seq > ?2",
            )?;
            let rows = stmt.query_map([seq, part.lower as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
            })?;
            rows.collect()
        })?;
        let Some((record, hash, prev)) = rows.into_iter().next() else {
            return Ok(None);
        };
        let prev = match prev {
            Some(prev) => Some(prev),
            // The first record of a segment: the previous hash is its base.
            None => prev_hash(&view, seq as u64)?,
        };
        Ok(Some((record, hash, prev)))
    };
    match blocking("audit_read_failed", read).await {
        Ok(Ok(Some((record, hash, prev)))) => {
            let record = parse_record(record);
            if !scope.sees(record["tenant"].as_str()) {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no audit record {seq}"),
                );
            }
            json_value(
                StatusCode::OK,
                &serde_json::json!({"seq": seq, "hash": hash, "prev_hash": prev, "record": record}),
            )
        }
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no audit record {seq}"),
        ),
        Ok(Err(e)) => internal("audit_read_failed", &e.to_string()),
        Err(resp) => resp,
    }
}

/// The hash of record `seq - 1`, wherever it is (None for the first record).
fn prev_hash(view: &crate::audit::view::View, seq: u64) -> rusqlite::Result<Option<String>> {
    if seq < 2 {
        return Ok(None);
    }
    let hashes = view.page_after(seq - 2, 1, |part, _| {
        let mut stmt = part
            .conn
            .prepare_cached("SELECT hash FROM records WHERE seq = ?1 AND seq > ?2")?;
        let rows = stmt.query_map([(seq - 1) as i64, part.lower as i64], |r| r.get(0))?;
        rows.collect()
    })?;
    Ok(hashes.into_iter().next())
}

/// Verify the whole chain and the signed checkpoints (instance admin).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "the verification report with `intact`", body = Object),
        (status = 403, body = ErrorBody)))]
pub async fn audit_verify(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
) -> Reply {
    if let Err(resp) = instance_only(&scope) {
        return resp;
    }
    let db = admin.audit.db_path().to_owned();
    let jsonl = db.with_file_name(crate::audit::checkpoint::JSONL_FILE);
    let key = std::fs::read_to_string(admin.state.path(crate::audit::checkpoint::PUB_FILE))
        .unwrap_or_default();
    let archive = admin.audit.archive().map(ToOwned::to_owned);
    let run = move || {
        let sources = crate::audit::verify::Sources {
            archive: archive.as_deref(),
            checkpoint_file: Some(jsonl.as_path()).filter(|p| p.exists()),
            public_hex: Some(key.trim()),
        };
        let report = crate::audit::verify::verify_all(&db, &sources);
        (report, last_checkpoint(&db))
    };
    match blocking("verify_failed", run).await {
        Ok((Ok(report), last)) => {
            let mut body = serde_json::to_value(&report).unwrap_or_default();
            body["intact"] = report.problem.is_none().into();
            // Every record before the first bad one was verified.
            body["verified_to"] = report
                .problem
                .as_ref()
                .map_or(report.from_seq + report.records - 1, |p| {
                    p.seq.saturating_sub(1)
                })
                .into();
            body["last_checkpoint"] = last.unwrap_or_default();
            json_value(StatusCode::OK, &body)
        }
        Ok((Err(e), _)) => internal("verify_failed", &e.to_string()),
        Err(resp) => resp,
    }
}

/// `{size, time}` of the newest signed checkpoint in the log (time in Unix microseconds).
fn last_checkpoint(db: &std::path::Path) -> Option<serde_json::Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let signed: String = conn
        .query_row(
            "SELECT signed FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&signed).ok()?;
    let c = &v["checkpoint"];
    Some(serde_json::json!({ "size": c["size"], "time": c["time"] }))
}
