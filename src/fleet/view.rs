//! The fleet's audit stream as the admin API and dashboard read it (`scope=fleet`): pages
//! of every instance's shipped records, one record by its stream sequence, and a live
//! follow. A tenant sees only its own subject (`<fleet>.audit.<tenant>.>`); the instance
//! admin sees every subject. Records are the shipped ones: each instance's log, once
//! committed there, in the order the stream took them.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::bus::{FleetError, bus, connect};
use super::stream::subject_token;
use crate::config::FleetConfig;

/// How long a page waits for the stream's next message before it counts as the end.
const PAGE_WAIT: Duration = Duration::from_secs(2);

/// One shipped record with its place in the fleet's stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetRecord {
    /// Its sequence in the fleet's stream: the cursor for pages and `Last-Event-ID`.
    pub stream_seq: u64,
    /// The log (instance) it was committed to, and its seq and hash there.
    pub log_id: String,
    pub seq: u64,
    pub hash: String,
    pub record: serde_json::Value,
}

/// The shipped form (see `stream.rs`).
#[derive(Deserialize)]
struct Shipped {
    log_id: String,
    seq: u64,
    hash: String,
    record: serde_json::Value,
}

/// A reader of the fleet's audit stream, connected on first use.
pub struct View {
    config: FleetConfig,
    client: OnceCell<async_nats::Client>,
}

impl View {
    /// A view of `config`'s fleet (nothing is connected yet).
    pub fn new(config: FleetConfig) -> View {
        View {
            config,
            client: OnceCell::new(),
        }
    }

    async fn stream(&self) -> Result<stream::Stream, FleetError> {
        let client = self
            .client
            .get_or_try_init(|| connect(&self.config))
            .await?;
        jetstream::new(client.clone())
            .get_stream(format!("{}-audit", self.config.name))
            .await
            .map_err(|e| bus(format!("the fleet's audit stream: {e}")))
    }

    /// The subject `tenant` may read (`None`: every record). Records are
    /// `<fleet>.audit.<tenant>.<log id>`, exactly four tokens; checkpoints have five.
    fn subject(&self, tenant: Option<&str>) -> String {
        match tenant {
            Some(t) => format!("{}.audit.{}.*", self.config.name, subject_token(t)),
            None => format!("{}.audit.*.*", self.config.name),
        }
    }

    /// The sequence of the stream's newest message (0 when empty).
    pub async fn last(&self) -> Result<u64, FleetError> {
        let mut stream = self.stream().await?;
        Ok(stream.info().await.map_err(bus)?.state.last_sequence)
    }

    /// A reader of the records `tenant` may see, from stream sequence `from` on.
    pub async fn follow(&self, tenant: Option<&str>, from: u64) -> Result<Follow, FleetError> {
        let stream = self.stream().await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.subject(tenant),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(bus)?;
        let messages = consumer.messages().await.map_err(bus)?;
        Ok(Follow {
            messages,
            tenant: tenant.map(str::to_owned),
        })
    }

    /// Up to `limit` records after stream sequence `after`, oldest first.
    pub async fn page(
        &self,
        tenant: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FleetRecord>, FleetError> {
        if after >= self.last().await? {
            return Ok(Vec::new());
        }
        let mut follow = self.follow(tenant, after + 1).await?;
        let mut out = Vec::new();
        while out.len() < limit {
            match tokio::time::timeout(PAGE_WAIT, follow.next()).await {
                Ok(Some((record, pending))) => {
                    out.push(record?);
                    if pending == 0 {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The record at stream sequence `seq`, if `tenant` may see it.
    pub async fn get(
        &self,
        tenant: Option<&str>,
        seq: u64,
    ) -> Result<Option<FleetRecord>, FleetError> {
        let stream = self.stream().await?;
        let Ok(message) = stream.get_raw_message(seq).await else {
            return Ok(None);
        };
        let record = decode(seq, &message.payload)?;
        Ok(visible(tenant, &record).then_some(record))
    }
}

/// A live reader of the fleet's stream.
pub struct Follow {
    messages: pull::Ordered,
    tenant: Option<String>,
}

impl Follow {
    /// The next record and how many more the stream holds now; `None` when it ended.
    pub async fn next(&mut self) -> Option<(Result<FleetRecord, FleetError>, u64)> {
        loop {
            let message = match self.messages.next().await? {
                Ok(m) => m,
                Err(e) => return Some((Err(bus(e)), 0)),
            };
            let (seq, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(e) => return Some((Err(bus(e.to_string())), 0)),
            };
            let record = decode(seq, &message.payload);
            // The subject already filters; the tenant in the record is checked as well.
            if let Ok(r) = &record
                && !visible(self.tenant.as_deref(), r)
            {
                continue;
            }
            return Some((record, pending));
        }
    }
}

fn decode(stream_seq: u64, payload: &[u8]) -> Result<FleetRecord, FleetError> {
    let s: Shipped = serde_json::from_slice(payload).map_err(|e| {
        bus(format!(
            "stream message {stream_seq} is not a shipped record: {e}"
        ))
    })?;
    Ok(FleetRecord {
        stream_seq,
        log_id: s.log_id,
        seq: s.seq,
        hash: s.hash,
        record: s.record,
    })
}

/// Whether `tenant` (None: the instance admin) may see `r`.
fn visible(tenant: Option<&str>, r: &FleetRecord) -> bool {
    tenant.is_none_or(|t| r.record["tenant"].as_str() == Some(t))
}
