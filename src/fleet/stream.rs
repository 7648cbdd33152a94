//! The fleet's audit stream. Each instance still commits every record to its own
//! hash-chained log before anything leaves; committed records are then shipped, in order,
//! to the JetStream stream `<fleet>-audit` on the subject `<fleet>.audit.<tenant>.<log id>`
//! (`_` without a tenant), each with the message id `<log id>:<seq>`, so a record resent
//! after a crash or an outage within the stream's duplicate window is dropped by the server.
//! How far shipping got is kept in the state dir (`audit-shipped`): an outage only delays
//! shipping. [`verify`] reads the stream back and checks every log's chain from its genesis,
//! naming the first gap, duplicate or broken link.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::bus::{FleetError, bus, connect};
use crate::audit::Audit;
use crate::audit::chain;
use crate::audit::checkpoint::{Signed, verify_signature};
use crate::audit::outbox::{Outbox, Row};
use crate::config::FleetConfig;
use crate::state::StateDir;

/// Where shipping progress is kept in the state dir: `<log id> <seq>`.
const PROGRESS_FILE: &str = "audit-shipped";
/// Records read and published per round.
const BATCH: usize = 256;
/// How long the server remembers message ids to drop resent records.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// One shipped record, as the stream carries it.
#[derive(Debug, Serialize, Deserialize)]
struct Shipped {
    log_id: String,
    seq: u64,
    hash: String,
    record: serde_json::Value,
}

/// What a message of the stream is: a record, or one of a log's signed checkpoints.
#[derive(Deserialize)]
#[serde(untagged)]
enum Message {
    Record(Shipped),
    Checkpoint { log_id: String, checkpoint: Signed },
}

/// The stream of `fleet`, created on first use.
async fn audit_stream(
    js: &jetstream::Context,
    fleet: &FleetConfig,
) -> Result<stream::Stream, FleetError> {
    js.get_or_create_stream(stream::Config {
        name: format!("{}-audit", fleet.name),
        subjects: vec![format!("{}.audit.>", fleet.name)],
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: fleet.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| bus(format!("cannot create the audit stream: {e}")))
}

/// Ships committed records until `shutdown`, reconnecting with backoff.
pub async fn ship(
    fleet: FleetConfig,
    audit: Arc<Audit>,
    state: StateDir,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    // A sealed segment stays in the state dir until the stream has every record of it.
    audit.hold_until_shipped(state.path(PROGRESS_FILE));
    let mut outbox = Outbox::open(audit, &state, PROGRESS_FILE);
    loop {
        let ended = tokio::select! {
            r = ship_session(&fleet, &mut outbox, &mut backoff) => r,
            _ = shutdown.changed() => return,
        };
        if let Err(e) = ended {
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "fleet: audit shipping paused; records stay in the local log until the bus is back");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn ship_session(
    fleet: &FleetConfig,
    outbox: &mut Outbox,
    backoff: &mut Duration,
) -> Result<(), FleetError> {
    let client = connect(fleet).await?;
    let js = jetstream::new(client);
    audit_stream(&js, fleet).await?;
    let log_id = outbox.log_id().to_owned();
    // Checkpoints are sent again once per session; the server drops repeats within its
    // duplicate window and `verify` takes identical copies.
    let mut checkpoints_shipped = 0;
    loop {
        let rows = outbox
            .next(BATCH)
            .await
            .map_err(|e| bus(format!("reading the audit log: {e}")))?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            continue;
        };
        let mut acks = Vec::with_capacity(rows.len());
        for Row {
            seq,
            hash,
            record,
            tenant,
        } in rows
        {
            let subject = format!(
                "{}.audit.{}.{log_id}",
                fleet.name,
                tenant.as_deref().map_or("_".into(), subject_token)
            );
            let body = format!(
                "{{\"log_id\":\"{log_id}\",\"seq\":{seq},\"hash\":\"{hash}\",\"record\":{record}}}"
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{log_id}:{seq}").as_str());
            let ack = js
                .publish_with_headers(subject, headers, Bytes::from(body))
                .await
                .map_err(bus)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(bus)?;
        }
        // The log's signed checkpoints up to what is shipped: a tail cut off in the stream
        // then shows as records a checkpoint vouches for but the stream lacks.
        let (db, after) = (outbox.db_path(), checkpoints_shipped);
        let archive = outbox.archive();
        let signed = tokio::task::spawn_blocking(move || {
            checkpoints_between(&db, archive.as_deref(), after, last)
        })
        .await
        .map_err(bus)?
        .map_err(|e| bus(format!("reading the log's checkpoints: {e}")))?;
        for (size, signed) in signed {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{log_id}:checkpoint:{size}").as_str(),
            );
            let body = format!("{{\"log_id\":\"{log_id}\",\"checkpoint\":{signed}}}");
            js.publish_with_headers(
                format!("{}.audit.checkpoint.{log_id}.signed", fleet.name),
                headers,
                Bytes::from(body),
            )
            .await
            .map_err(bus)?
            .await
            .map_err(bus)?;
            checkpoints_shipped = size;
        }
        outbox
            .shipped(last)
            .await
            .map_err(|e| bus(format!("saving shipping progress: {e}")))?;
        *backoff = Duration::from_millis(200);
    }
}

/// The log's signed checkpoints with `after < size <= upto`, by size (their JSON text),
/// across its segments.
fn checkpoints_between(
    db: &std::path::Path,
    archive: Option<&std::path::Path>,
    after: u64,
    upto: u64,
) -> rusqlite::Result<Vec<(u64, String)>> {
    let view = crate::audit::view::View::open(db, archive)?;
    let mut out: Vec<(u64, String)> = Vec::new();
    view.ascending(after, |part| {
        let mut stmt = part.conn.prepare_cached(
            "SELECT size, signed FROM checkpoints WHERE size > ?1 AND size <= ?2 ORDER BY size",
        )?;
        let rows = stmt.query_map(
            rusqlite::params![part.lower.max(after) as i64, upto as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )?;
        for row in rows {
            let (size, signed) = row?;
            // A seal's checkpoint is in both the sealed file and the next one.
            if out.last().is_none_or(|(last, _)| *last < size) {
                out.push((size, signed));
            }
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// A tenant name as one subject token (`.` would split it).
pub(super) fn subject_token(tenant: &str) -> String {
    tenant.replace(['.', '*', '>', ' '], "_")
}

/// One log's verdict in the fleet's stream.
#[derive(Debug, Serialize)]
pub struct LogReport {
    pub log_id: String,
    pub records: u64,
    /// Signed checkpoints of the log found in the stream.
    pub checkpoints: u64,
    /// The first problem, `None` when the log's chain is whole.
    pub problem: Option<String>,
}

/// Reads the whole stream back and checks each log's chain from its genesis.
pub async fn verify(fleet: &FleetConfig) -> Result<Vec<LogReport>, FleetError> {
    let client = connect(fleet).await?;
    let js = jetstream::new(client);
    let mut audit = js
        .get_stream(format!("{}-audit", fleet.name))
        .await
        .map_err(|e| bus(format!("no audit stream for fleet {}: {e}", fleet.name)))?;
    let held = audit.info().await.map_err(bus)?.state.messages;
    // Per log: seq -> (hash, canonical record); a second, different copy is a problem.
    let mut logs: HashMap<String, BTreeMap<u64, (String, String)>> = HashMap::new();
    let mut conflicts: HashMap<String, u64> = HashMap::new();
    let mut checkpoints: HashMap<String, Vec<Signed>> = HashMap::new();
    // One ordered consumer over the whole stream, not a request per message; a message
    // deleted from the stream is simply not delivered, and shows as a gap in its log.
    let mut messages = match held {
        0 => None,
        _ => Some(
            audit
                .create_consumer(pull::OrderedConfig {
                    filter_subject: format!("{}.audit.>", fleet.name),
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(bus)?
                .messages()
                .await
                .map_err(bus)?,
        ),
    };
    while let Some(reading) = messages.as_mut() {
        let next = tokio::time::timeout(Duration::from_secs(30), reading.next())
            .await
            .map_err(|_| bus("the audit stream stopped delivering for 30 s"))?;
        let message = next
            .ok_or_else(|| bus("the audit stream ended"))?
            .map_err(bus)?;
        let info = message.info().map_err(|e| bus(e.to_string()))?;
        let (n, pending) = (info.stream_sequence, info.pending);
        if pending == 0 {
            messages = None;
        }
        let shipped = match serde_json::from_slice(&message.payload) {
            Ok(Message::Record(s)) => s,
            Ok(Message::Checkpoint { log_id, checkpoint }) => {
                checkpoints.entry(log_id).or_default().push(checkpoint);
                continue;
            }
            Err(e) => {
                return Err(bus(format!(
                    "stream message {n} is not a shipped record or checkpoint: {e}"
                )));
            }
        };
        let entry = (shipped.hash, chain::canonical(&shipped.record));
        let log = logs.entry(shipped.log_id.clone()).or_default();
        match log.get(&shipped.seq) {
            Some(seen) if *seen != entry => {
                let first = conflicts.entry(shipped.log_id).or_insert(shipped.seq);
                *first = (*first).min(shipped.seq);
            }
            Some(_) => {}
            None => {
                log.insert(shipped.seq, entry);
            }
        }
    }
    let mut out: Vec<LogReport> = logs
        .into_iter()
        .map(|(log_id, records)| {
            let signed = checkpoints.remove(&log_id).unwrap_or_default();
            let problem = check_chain(&log_id, &records, conflicts.get(&log_id).copied())
                .or_else(|| check_checkpoints(&log_id, &records, &signed));
            LogReport {
                records: records.len() as u64,
                checkpoints: signed.len() as u64,
                log_id,
                problem,
            }
        })
        .collect();
    out.sort_by(|a, b| a.log_id.cmp(&b.log_id));
    Ok(out)
}

/// The first problem in one log's records as the stream holds them.
fn check_chain(
    log_id: &str,
    records: &BTreeMap<u64, (String, String)>,
    conflict: Option<u64>,
) -> Option<String> {
    let mut prev = chain::genesis(log_id);
    for (expected, (&seq, (hash, canonical))) in (1u64..).zip(records) {
        if conflict.is_some_and(|c| c <= seq) {
            return Some(format!("seq {seq}: two different records in the stream"));
        }
        if seq != expected {
            return Some(format!(
                "seq {expected}: missing from the stream (next is {seq})"
            ));
        }
        let link = chain::link(&prev, canonical.as_bytes());
        if !chain::hex_matches(&link, hash) {
            return Some(format!(
                "seq {seq}: the record does not hash to its chain link (altered, or a record before it was)"
            ));
        }
        prev = link;
    }
    None
}

/// The first checkpoint of a log that its records in the stream contradict: a bad
/// signature, another log's or another key's checkpoint, a head that is not the chain's
/// link at its size, or a size beyond the last record (the tail is missing). Runs after
/// [`check_chain`], so the records are contiguous from 1.
fn check_checkpoints(
    log_id: &str,
    records: &BTreeMap<u64, (String, String)>,
    signed: &[Signed],
) -> Option<String> {
    let key = signed.first().map(|s| s.key.to_ascii_lowercase())?;
    let held = records.len() as u64;
    for s in signed {
        let size = s.checkpoint.size;
        if s.checkpoint.log_id != log_id
            || !s.key.eq_ignore_ascii_case(&key)
            || !verify_signature(s, &key)
        {
            return Some(format!(
                "checkpoint at size {size}: not validly signed by this log's key"
            ));
        }
        if size > held {
            return Some(format!(
                "seq {}: missing from the stream, though a checkpoint signed at size {size} vouches for it (the tail was cut off)",
                held + 1
            ));
        }
        let Some((hash, _)) = records.get(&size) else {
            continue; // size 0: nothing to compare
        };
        if !hash.eq_ignore_ascii_case(&s.checkpoint.head) {
            return Some(format!(
                "seq {size}: its hash is not the head the checkpoint signed at that size"
            ));
        }
    }
    None
}
