//! `agentgate policy replay`: the tuples recorded in the audit log, decided again by a
//! candidate policy, and what would change. Only a log whose whole chain verifies is
//! replayed. Identical inputs are evaluated once; distinct ones are spread over the cores
//! while the log is still being read and verified.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::decision::Effect;
use super::engine::Policy;
use crate::audit::verify::{Sources, VerifyError, verify_visiting};

/// Example records kept per transition.
const EXAMPLES: usize = 3;

/// Which recorded decisions to replay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    /// Only records at or after this Unix time in microseconds.
    pub since_us: Option<i64>,
    /// Only this tenant's records.
    pub tenant: Option<String>,
    /// Only this agent's: its SPIFFE ID or its name.
    pub agent: Option<String>,
}

/// Where the log is and how to check it.
#[derive(Debug, Clone)]
pub struct Log {
    pub db: PathBuf,
    /// Signed checkpoints outside the log (`checkpoints.jsonl`), when present.
    pub checkpoints: Option<PathBuf>,
    /// The checkpoint signing key (hex), to check their signatures.
    pub public_key: Option<String>,
    /// Where sealed segments are archived (`audit.archive_dir`), when set.
    pub archive: Option<PathBuf>,
}

impl Log {
    /// The instance's audit log (`audit.path`), with its checkpoint file and key when present.
    pub fn in_state(state: &crate::state::StateDir, audit: &crate::audit::AuditConfig) -> Log {
        let db = audit.db_path(state);
        let checkpoints =
            Some(db.with_file_name(crate::audit::checkpoint::JSONL_FILE)).filter(|p| p.exists());
        let public_key = std::fs::read_to_string(state.path(crate::audit::checkpoint::PUB_FILE))
            .ok()
            .map(|k| k.trim().to_owned());
        Log {
            db,
            checkpoints,
            public_key,
            archive: audit.archive().map(PathBuf::from),
        }
    }
}

/// Registered agents' owners by SPIFFE ID (the tuple's `subject.properties.owner`, which
/// the record does not repeat); empty when the registry cannot be read.
pub fn owners(state: &crate::state::StateDir) -> HashMap<String, String> {
    let Ok(registry) = crate::identity::registry::Registry::open(state) else {
        return HashMap::new();
    };
    registry
        .agents(None, 0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| Some((a.spiffe_id, a.owner?)))
        .collect()
}

/// Recorded effect → candidate effect, for one action.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub from: Effect,
    pub to: Effect,
    pub action: String,
    pub count: u64,
    /// A few of the records (their `seq`), with the candidate's reasons for the first.
    pub examples: Vec<u64>,
    pub reasons: Vec<String>,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub log_id: String,
    /// Records read and verified (every kind).
    pub records: u64,
    /// Decisions that matched the filter and were decided again.
    pub replayed: u64,
    /// Distinct inputs among them (each evaluated once; the request's time is left out when
    /// the candidate cannot read it).
    pub distinct: u64,
    /// Decisions from before the tuple was recorded, or refused before intent ran.
    pub skipped_no_tuple: u64,
    /// Decisions with a tuple that policy never decided (refused by intent).
    pub skipped_undecided: u64,
    pub unchanged: u64,
    pub changed: u64,
    /// Changes, most frequent first.
    pub transitions: Vec<Transition>,
    /// Counts by (recorded, candidate) effect, agreements included.
    pub totals: Vec<(Effect, Effect, u64)>,
    pub candidate_hash: String,
    pub elapsed_ms: u128,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(
        "the audit log does not verify (record {seq}: {why}); replay reads only a verified log — run `agentgate audit verify` for details"
    )]
    Tampered { seq: u64, why: String },
    #[error(
        "the replay did not finish within {within:?}; replay long logs or slow candidates on the command line (`agentgate policy replay`), or narrow it with since/agent"
    )]
    TooLong { within: std::time::Duration },
}

/// The fields of a decision record replay reads.
#[derive(Deserialize)]
struct Recorded {
    kind: String,
    #[serde(default)]
    ts: i64,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    action: Option<Value>,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    policy_effect: Option<Effect>,
}

/// One replayed decision, kept small: a million of them fit in a few tens of MiB.
struct Entry {
    seq: u64,
    action: u32,
    recorded: Effect,
    input: u32,
}

/// The candidate's answer to one distinct input.
#[derive(Clone)]
struct Answer {
    effect: Effect,
    reasons: Arc<[String]>,
}

/// Replays the decisions in `log` that `filter` selects against `candidate`. `owners`
/// maps SPIFFE IDs to their registry owner (the recorded tuple does not repeat it);
/// `progress(done, total)` is called now and then with records read.
pub fn replay(
    log: &Log,
    candidate: &Policy,
    filter: &Filter,
    owners: &HashMap<String, String>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Report, ReplayError> {
    let all = Limits {
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        within: None,
    };
    replay_within(log, candidate, filter, owners, progress, &all)
}

/// How much of the machine a replay may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Threads evaluating the candidate (beside the one reading the log).
    pub workers: usize,
    /// Longest the replay may run before it stops with [`ReplayError::TooLong`].
    pub within: Option<std::time::Duration>,
}

/// [`replay`] within `limits`: inside the proxy, a replay must not take every core, nor
/// run for hours on a candidate that is slow to evaluate.
pub fn replay_within(
    log: &Log,
    candidate: &Policy,
    filter: &Filter,
    owners: &HashMap<String, String>,
    progress: &(dyn Fn(u64, u64) + Sync),
    limits: &Limits,
) -> Result<Report, ReplayError> {
    let started = Instant::now();
    let total = count_records(&log.db, log.archive.as_deref());
    // A policy that cannot read the time decides a request alike whatever second it came.
    let clockless = candidate.clockless();
    let workers = limits.workers.max(1);
    let deadline = limits.within.map(|d| started + d);
    let stopped = AtomicBool::new(false);
    let past = || {
        let late = deadline.is_some_and(|d| Instant::now() >= d);
        if late {
            stopped.store(true, Ordering::Relaxed);
        }
        late || stopped.load(Ordering::Relaxed)
    };
    let (work_tx, work_rx) = mpsc::sync_channel::<(u32, Value)>(workers * 64);
    let work_rx = Mutex::new(work_rx);
    let answers: Mutex<Vec<Option<Answer>>> = Mutex::new(Vec::new());

    let mut entries: Vec<Entry> = Vec::new();
    let mut actions: Vec<String> = Vec::new();
    let mut action_ids: HashMap<String, u32> = HashMap::new();
    let mut inputs: HashMap<[u8; 16], u32> = HashMap::new();
    let (mut no_tuple, mut undecided) = (0u64, 0u64);

    let report = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let next = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((id, input))) = next else { return };
                    if past() {
                        continue; // drained, not evaluated: the replay is over
                    }
                    let d = candidate.evaluate(&input);
                    let answer = Answer {
                        effect: d.effect,
                        reasons: d.reasons.into(),
                    };
                    if let Ok(mut all) = answers.lock() {
                        let i = id as usize;
                        if all.len() <= i {
                            all.resize(i + 1, None);
                        }
                        all[i] = Some(answer);
                    }
                }
            });
        }
        let sources = Sources {
            archive: log.archive.as_deref(),
            checkpoint_file: log.checkpoints.as_deref(),
            public_hex: log.public_key.as_deref(),
        };
        let report = verify_visiting(&log.db, &sources, |seq, bytes| {
            if past() {
                return;
            }
            if seq % 8192 == 0 {
                progress(seq, total);
            }
            let Ok(r) = serde_json::from_slice::<Recorded>(bytes) else {
                return;
            };
            if r.kind != "decision" || !selected(&r, filter) {
                return;
            }
            let (Some(action), Some(resource), Some(context)) = (r.action, r.resource, r.context)
            else {
                no_tuple += 1;
                return;
            };
            let Some(recorded) = r.policy_effect else {
                undecided += 1;
                return;
            };
            let name = action["name"].as_str().unwrap_or("?").to_owned();
            let next_action = action_ids.len() as u32;
            let action_id = *action_ids.entry(name.clone()).or_insert_with(|| {
                actions.push(name);
                next_action
            });
            let subject = subject(r.agent.as_deref(), r.tenant.as_deref(), owners);
            let input = json!({
                "subject": subject,
                "action": action,
                "resource": resource,
                "context": context,
            });
            let key = digest(&input, clockless);
            let next_input = inputs.len() as u32;
            let input_id = *inputs.entry(key).or_insert(next_input);
            if input_id == next_input {
                // A closed channel means every worker is gone: nothing left to do.
                let _ = work_tx.send((input_id, input));
            }
            entries.push(Entry {
                seq,
                action: action_id,
                recorded,
                input: input_id,
            });
        });
        drop(work_tx);
        report
    })?;
    progress(total, total);
    if let (true, Some(within)) = (stopped.load(Ordering::Relaxed), limits.within) {
        return Err(ReplayError::TooLong { within });
    }
    if let Some(p) = report.problem {
        return Err(ReplayError::Tampered {
            seq: p.seq,
            why: p.why,
        });
    }

    let answers = answers.into_inner().unwrap_or_default();
    let mut totals: BTreeMap<(u8, u8), u64> = BTreeMap::new();
    let mut changes: HashMap<(Effect, Effect, u32), Transition> = HashMap::new();
    let mut changed = 0;
    for e in &entries {
        let Some(Some(answer)) = answers.get(e.input as usize) else {
            continue;
        };
        *totals
            .entry((rank(e.recorded), rank(answer.effect)))
            .or_default() += 1;
        if answer.effect == e.recorded {
            continue;
        }
        changed += 1;
        let t = changes
            .entry((e.recorded, answer.effect, e.action))
            .or_insert_with(|| Transition {
                from: e.recorded,
                to: answer.effect,
                action: actions[e.action as usize].clone(),
                count: 0,
                examples: Vec::new(),
                reasons: answer.reasons.to_vec(),
            });
        t.count += 1;
        if t.examples.len() < EXAMPLES {
            t.examples.push(e.seq);
        }
    }
    let mut transitions: Vec<Transition> = changes.into_values().collect();
    transitions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (rank(a.from), rank(a.to)).cmp(&(rank(b.from), rank(b.to))))
            .then_with(|| a.action.cmp(&b.action))
    });
    let replayed = entries.len() as u64;
    Ok(Report {
        log_id: report.log_id,
        records: report.records,
        replayed,
        distinct: inputs.len() as u64,
        skipped_no_tuple: no_tuple,
        skipped_undecided: undecided,
        unchanged: replayed - changed,
        changed,
        transitions,
        totals: totals
            .into_iter()
            .map(|((a, b), n)| (EFFECTS[a as usize], EFFECTS[b as usize], n))
            .collect(),
        candidate_hash: candidate.hash().to_string(),
        elapsed_ms: started.elapsed().as_millis(),
    })
}

const EFFECTS: [Effect; 3] = [Effect::Allow, Effect::Escalate, Effect::Deny];

fn rank(e: Effect) -> u8 {
    match e {
        Effect::Allow => 0,
        Effect::Escalate => 1,
        Effect::Deny => 2,
    }
}

/// Whether a record is one `filter` asks for.
fn selected(r: &Recorded, filter: &Filter) -> bool {
    if filter.since_us.is_some_and(|since| r.ts < since) {
        return false;
    }
    if let Some(t) = &filter.tenant {
        if r.tenant.as_deref() != Some(t.as_str()) {
            return false;
        }
    }
    if let Some(a) = &filter.agent {
        let Some(id) = r.agent.as_deref() else {
            return false;
        };
        let name = crate::identity::subject_parts(id).map(|(_, _, n)| n);
        if id != a && name.as_deref() != Some(a.as_str()) {
            return false;
        }
    }
    true
}

/// The tuple's subject as the intent gate built it for this agent.
fn subject(agent: Option<&str>, tenant: Option<&str>, owners: &HashMap<String, String>) -> Value {
    let id = agent.unwrap_or_default();
    let (domain, _, name) = crate::identity::subject_parts(id).unwrap_or_default();
    let mut properties = Map::new();
    properties.insert("name".into(), name.into());
    properties.insert("tenant".into(), tenant.into());
    properties.insert("owner".into(), owners.get(id).cloned().into());
    properties.insert("trust_domain".into(), domain.into());
    json!({"type": "agent", "id": id, "properties": properties})
}

/// A 128-bit digest of an input's JSON (without its time when `clockless`), for telling
/// distinct inputs apart.
fn digest(input: &Value, clockless: bool) -> [u8; 16] {
    let bytes = super::cache::key(input, clockless).unwrap_or_default();
    let full = crate::digest::sha256(&bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// How many records the log holds, for progress (0 when it cannot say).
fn count_records(db: &Path, archive: Option<&Path>) -> u64 {
    crate::audit::view::View::open(db, archive)
        .and_then(|v| v.last_seq())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
