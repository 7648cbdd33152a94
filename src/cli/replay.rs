//! `agentgate policy replay`: recorded traffic decided again by a candidate policy, with a
//! progress bar on a terminal and a table of what would change.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};

use agentgate::config::Config;
use agentgate::policy::Policy;
use agentgate::policy::replay::{self, Filter, Log, Report};
use agentgate::state::StateDir;

use super::Output;

/// What `policy replay` was asked.
pub(crate) struct ReplayArgs<'a> {
    pub dir: &'a Path,
    pub since: Option<&'a str>,
    pub tenant: Option<String>,
    pub agent: Option<String>,
    pub output: Output,
}

/// Runs a replay and prints it; returns the report.
pub(crate) fn run(state: &StateDir, config: &Config, args: ReplayArgs<'_>) -> Result<Report> {
    let candidate = Policy::load(args.dir, &config.policy)
        .with_context(|| format!("loading the candidate policy in {}", args.dir.display()))?;
    let filter = Filter {
        since_us: args.since.map(since_us).transpose()?,
        tenant: args.tenant,
        agent: args.agent,
    };
    let log = Log::in_state(state, &config.audit);
    if !log.db.exists() {
        anyhow::bail!(
            "no audit log at {}: nothing has been recorded to replay yet",
            log.db.display()
        );
    }
    let owners = replay::owners(state);
    let bar = (args.output == Output::Text && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "replaying {bar:40} {pos}/{len} records ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let report = replay::replay(&log, &candidate, &filter, &owners, &progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report?;
    match args.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => out!("{}", render(&report, args.dir)),
    }
    Ok(report)
}

/// `--since 7d` as a Unix time in microseconds.
fn since_us(text: &str) -> Result<i64> {
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("--since {text}: expected a duration such as 30m, 7d or 12h"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(now.saturating_sub(ago).as_micros() as i64)
}

/// The report as a table for people.
pub(crate) fn render(r: &Report, dir: &Path) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let secs = r.elapsed_ms as f64 / 1000.0;
    let _ = writeln!(
        o,
        "Replayed {} recorded decisions against {} (policy {}) in {secs:.1} s: {} distinct inputs, {} records verified in log {}.",
        r.replayed,
        dir.display(),
        short(&r.candidate_hash),
        r.distinct,
        r.records,
        r.log_id
    );
    if r.skipped_no_tuple + r.skipped_undecided > 0 {
        let _ = writeln!(
            o,
            "Skipped {} without a recorded tuple (refused before intent, or recorded before tuples were) and {} that policy never decided.",
            r.skipped_no_tuple, r.skipped_undecided
        );
    }
    let _ = writeln!(o, "Unchanged: {}   Changed: {}", r.unchanged, r.changed);
    if !r.transitions.is_empty() {
        let _ = writeln!(o);
        let width = r
            .transitions
            .iter()
            .map(|t| t.action.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            o,
            "{:<20} {:<width$} {:>8}  EXAMPLES (seq)  CANDIDATE'S REASON",
            "TRANSITION", "ACTION", "COUNT"
        );
        for t in &r.transitions {
            let arrow = format!("{} → {}", t.from.as_str(), t.to.as_str());
            let seqs: Vec<String> = t.examples.iter().map(u64::to_string).collect();
            let reason = t.reasons.first().map(String::as_str).unwrap_or("");
            let _ = writeln!(
                o,
                "{arrow:<20} {:<width$} {:>8}  {:<14}  {reason}",
                t.action,
                t.count,
                seqs.join(", ")
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<10} {:<10} {:>10}",
        "RECORDED", "CANDIDATE", "DECISIONS"
    );
    for (from, to, n) in &r.totals {
        let _ = writeln!(o, "{:<10} {:<10} {n:>10}", from.as_str(), to.as_str());
    }
    o
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
