//! `agentgate policy draft`: a policy and its tests from plain-English sentences, checked
//! (compiled, tests run) before anything is written; with `[policy.assistant]`, a model
//! drafts what the grammar cannot read, under the same checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use agentgate::config::Config;
use agentgate::intent::Intent;
use agentgate::policy::assistant::{self, AssistantConfig, Drafter, Question};
use agentgate::policy::draft::{self, Draft, Origin, Source, Understood};
use agentgate::policy::replay::{Filter, Log, Report};
use agentgate::policy::runner::CaseResult;
use agentgate::policy::{Policy, Sources};
use agentgate::state::StateDir;

use super::Output;

/// `agentgate policy draft` arguments.
#[derive(Args)]
pub(crate) struct DraftArgs {
    /// Sentences, one rule each (quote each), e.g. "agents may read any repository in acme".
    sentences: Vec<String>,
    /// Read the sentences from FILE, one per line (blank lines and `#` comments skipped).
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "sentences")]
    file: Option<PathBuf>,
    /// Write DIR/policy.rego and DIR/policy_test.yaml (creating DIR) once every check passes.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
    /// With --write: replace those files if they exist.
    #[arg(long, requires = "write")]
    force: bool,
    /// Replay the recorded traffic of this long ago to now against the draft (`0s`: none).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    replay_since: String,
    #[arg(long, short, value_enum, default_value_t)]
    output: Output,
}

/// Drafts, checks, prints and (with --write) writes; false when a generated test failed.
pub(crate) fn run(state: &StateDir, config: &Config, args: DraftArgs) -> Result<bool> {
    let sources = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Source::from_file(&text)
        }
        None => Source::from_args(&args.sentences),
    };
    if sources.is_empty() {
        bail!(draft::DraftError::Empty);
    }
    if let Some(dir) = &args.write {
        writable(dir, args.force)?;
    }
    let intent = Intent::embedded(config.intent.max_body)?.with_mcp(&config.mcp.servers);
    let understood = draft::understand(&sources, &intent)?;
    let (draft, results) = if understood.errors.is_empty() {
        let Some(draft) = understood.draft else {
            bail!(draft::DraftError::Empty);
        };
        let results = draft::check(&draft.rego, &draft.tests, &intent, &config.policy)
            .context("the drafted policy failed its checks (a bug in the grammar's Rego)")?;
        (draft, results)
    } else {
        let Some(a) = &config.policy.assistant else {
            bail!(
                "{}\nThe grammar is in the README (\"Drafting a policy in plain English\"); with [policy.assistant] configured, a model drafts sentences outside it.",
                draft::DraftError::Unparsed(understood.errors)
            );
        };
        ask_model(config, a, &sources, understood, &intent)?
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    let written = match &args.write {
        Some(dir) if failed == 0 => write(dir, &draft, args.force)?,
        _ => Vec::new(),
    };
    let replayed = replay(state, config, &draft, &args.replay_since)?;
    print(&draft, &results, &written, replayed.as_ref(), args.output)?;
    if failed > 0 && args.write.is_some() {
        eprintln!("not written: {failed} test(s) failed");
    }
    Ok(failed == 0)
}

/// Asks `[policy.assistant]` to draft the whole policy, and accepts its answer only if it
/// passes the gate.
fn ask_model(
    config: &Config,
    a: &AssistantConfig,
    sources: &[Source],
    understood: Understood,
    intent: &Intent,
) -> Result<(Draft, Vec<CaseResult>)> {
    let sentences: Vec<String> = sources
        .iter()
        .map(|s| s.text.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let q = Question {
        sentences: &sentences,
        not_understood: &understood.errors,
        grammar_rego: understood.draft.as_ref().map(|d| d.rego.as_str()),
    };
    for e in &understood.errors {
        eprintln!("not in the grammar, asking {} at {}: {e}", a.model, a.url);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let guard = Arc::new(agentgate::egress::guard::Guard::new(
        &config.egress,
        &config.upstream.resolve,
    ));
    let tls = agentgate::egress::upstream::Upstream::new(&config.upstream, guard, provider)?
        .client_config()?;
    let answer = super::block_on(assistant::ask(a, tls, &q))??;
    let by = Drafter {
        model: &a.model,
        url: &a.url,
    };
    assistant::accept(
        &answer,
        &q,
        understood.draft.as_ref(),
        by,
        intent,
        &config.policy,
    )
    .map_err(|refusal| anyhow::anyhow!("the model's draft is refused: {refusal}"))
}

const FILES: [&str; 2] = ["policy.rego", "policy_test.yaml"];

/// Refuses, before any work, a --write that would replace files without `force`.
fn writable(dir: &Path, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(path) = FILES.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
        bail!(
            "{} exists: nothing drafted or written (--force replaces it)",
            path.display()
        );
    }
    Ok(())
}

/// Writes DIR/policy.rego and DIR/policy_test.yaml.
fn write(dir: &Path, draft: &Draft, force: bool) -> Result<Vec<PathBuf>> {
    writable(dir, force)?;
    let files = [
        (dir.join(FILES[0]), &draft.rego),
        (dir.join(FILES[1]), &draft.tests),
    ];
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (path, text) in &files {
        std::fs::write(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// The draft decided on recorded traffic (`None` when nothing is recorded yet or `since` is
/// zero). Only the drafted Rego takes part, as it would once activated.
fn replay(state: &StateDir, config: &Config, draft: &Draft, since: &str) -> Result<Option<Report>> {
    let ago = humantime::parse_duration(since)
        .with_context(|| format!("--replay-since {since}: expected a duration such as 7d or 0s"))?;
    let log = Log::in_state(state, &config.audit);
    if ago.is_zero() || !log.db.exists() {
        return Ok(None);
    }
    let sources = Sources::from_files([("policy.rego".to_owned(), draft.rego.clone())]);
    let candidate = Policy::from_sources(&sources, &config.policy)?;
    let filter = Filter {
        since_us: Some(agentgate::clock::now_micros() - ago.as_micros() as i64),
        ..Filter::default()
    };
    let owners = agentgate::policy::replay::owners(state);
    let report = agentgate::policy::replay::replay(&log, &candidate, &filter, &owners, &|_, _| {})
        .context("replaying recorded traffic against the draft")?;
    Ok(Some(report))
}

fn print(
    draft: &Draft,
    results: &[CaseResult],
    written: &[PathBuf],
    replayed: Option<&Report>,
    output: Output,
) -> Result<()> {
    let failed = results.iter().filter(|r| !r.passed).count();
    match output {
        Output::Json => {
            let origin = match &draft.origin {
                Origin::Grammar => serde_json::json!({"by": "grammar"}),
                Origin::Model { model, url } => {
                    serde_json::json!({"by": "model", "model": model, "url": url})
                }
            };
            let doc = serde_json::json!({
                "origin": origin,
                "sentences": draft.sentences,
                "rego": draft.rego,
                "tests": draft.tests,
                "results": results,
                "passed": results.len() - failed,
                "failed": failed,
                "warnings": draft.warnings,
                "written": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "replay": replayed,
            });
            outln!("{}", &serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => {
            let by = match &draft.origin {
                Origin::Grammar => "the grammar".to_owned(),
                Origin::Model { model, url } => format!("the model {model} at {url}"),
            };
            outln!("# ---- policy.rego (drafted by {by}) ----");
            out!("{}", draft.rego);
            outln!("# ---- policy_test.yaml ----");
            out!("{}", draft.tests);
            outln!("# ---- tests ----");
            for r in results {
                let mark = if r.passed { "PASS" } else { "FAIL" };
                outln!("{mark}  {}: {}", r.file, r.name);
                if !r.passed {
                    outln!("      {}", r.detail);
                }
            }
            outln!("{} passed, {failed} failed", results.len() - failed);
            match replayed {
                Some(r) => {
                    outln!("# ---- replay of recorded traffic ----");
                    out!(
                        "{}",
                        super::replay::render(r, std::path::Path::new("the draft"))
                    );
                }
                None => outln!("# ---- no recorded traffic to replay ----"),
            }
            for w in &draft.warnings {
                eprintln!("warning: {w}");
            }
            for p in written {
                outln!("wrote {}", p.display());
            }
        }
    }
    Ok(())
}
