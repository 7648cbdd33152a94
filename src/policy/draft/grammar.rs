//! The parser: one sentence of the controlled English into a [`Rule`], or a message that
//! says what it expected at the word where it stopped. It never guesses: a sentence with
//! two modals, an ambiguous noun or a qualifier that does not fit its object is refused.
//!
//! ```text
//! sentence  := rule ["."]
//! rule      := subject modal action                    agents may read any repository in acme
//!            | "only" names "may" action               only ci-bot may merge pull requests
//!            | "no agent" ["may"] verb object          no agent deletes repositories
//!            | "no agent" ["may"] verb "more than" N object per ["without approval"]
//!            | imperative action                       never delete anything
//!            | [verb] object verdict                   mail to outside acme.com needs approval
//! subject   := agents | all agents | every agent | each agent | any agent | an agent | agent NAME
//! modal     := may | can | must not | may not | cannot | never | should not | do not
//!            | must ask before | ask before | need(s) approval to | …
//! imperative:= never | do not | don't | [always] ask before | require approval before
//! action    := verb [to|on|in|from] object
//! object    := [any|all|every|the|a|an] [external|public] noun qualifier*
//! qualifier := in ORG | in OWNER/REPO | [to] outside DOMAIN {, DOMAIN} | to public channels
//! per       := (per|a|an|each|every) [N] (second|minute|hour|day|week)[s]
//! verdict   := needs approval | is allowed | is not allowed | is forbidden
//! ```

use crate::policy::decision::{Effect, MAX_BUDGET_LIMIT, MAX_BUDGET_WINDOW};

use super::ir::{Action, Rule, Verb, Who, Window};
use super::vocab;

mod object;
mod phrases;
mod token;

use phrases::{
    ALLOW, ASK, ASK_IMPERATIVE, DENY, DENY_IMPERATIVE, MODAL_LIST, PREPOSITIONS, VERDICTS, modal_at,
};
use token::{Tok, tokenize};

/// Parses one sentence.
pub(super) fn parse(text: &str) -> Result<Rule, String> {
    let toks = tokenize(text);
    if toks.is_empty() {
        return Err("the sentence is empty".into());
    }
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        last: None,
        modal: None,
    };
    let rule = p.rule()?;
    p.finish()?;
    Ok(rule)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    /// The words consumed last, for "after …".
    last: Option<String>,
    /// The sentence's modal, for "two modals".
    modal: Option<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(|t| t.word.as_str())
    }

    fn at(&self, words: &[&str]) -> bool {
        words
            .iter()
            .enumerate()
            .all(|(i, w)| self.toks.get(self.pos + i).is_some_and(|t| t.word == *w))
    }

    fn take(&mut self, n: usize) -> String {
        let raw: Vec<&str> = self.toks[self.pos..self.pos + n]
            .iter()
            .map(|t| t.raw.as_str())
            .collect();
        self.pos += n;
        let text = raw.join(" ");
        self.last = Some(text.clone());
        text
    }

    fn eat(&mut self, words: &[&str]) -> bool {
        if self.at(words) {
            self.take(words.len());
            true
        } else {
            false
        }
    }

    /// The first of `options` found here, consumed.
    fn eat_any(&mut self, options: &[&[&str]]) -> Option<String> {
        let found = options.iter().find(|o| self.at(o))?;
        Some(self.take(found.len()))
    }

    fn found(&self) -> String {
        match self.toks.get(self.pos) {
            Some(t) => format!("\"{}\"", t.raw),
            None => "the end of the sentence".into(),
        }
    }

    fn expected(&self, what: &str) -> String {
        match &self.last {
            Some(last) => format!("expected {what} after \"{last}\", found {}", self.found()),
            None => format!("expected {what} at the start, found {}", self.found()),
        }
    }

    /// A modal starting here (any kind), without consuming it.
    fn modal_here(&self) -> Option<String> {
        modal_at(self.toks, self.pos)
    }

    fn two_modals(&self, second: &str) -> String {
        format!(
            "it has two modals, \"{}\" and \"{second}\": a sentence says one thing (split it in two)",
            self.modal.as_deref().unwrap_or("")
        )
    }

    fn set_modal(&mut self, m: String) -> Result<(), String> {
        self.modal = Some(m);
        match self.modal_here() {
            Some(second) => Err(self.two_modals(&second)),
            None => Ok(()),
        }
    }

    fn finish(&self) -> Result<(), String> {
        if self.pos >= self.toks.len() {
            return Ok(());
        }
        if self.modal.is_some()
            && let Some(second) = (self.pos..self.toks.len()).find_map(|i| modal_at(self.toks, i))
        {
            return Err(self.two_modals(&second));
        }
        Err(self.expected("the end of the sentence (one rule per sentence)"))
    }

    fn rule(&mut self) -> Result<Rule, String> {
        if self.eat(&["no", "agent"]) || self.eat(&["no", "agents"]) {
            return self.no_agent();
        }
        if self.eat(&["only"]) {
            let names = self.names()?;
            return self.only(names);
        }
        if let Some(who) = self.subject()? {
            let effect = self.modal()?;
            let action = self.action(effect == Effect::Allow)?;
            return Ok(Rule::Decide {
                who,
                effect,
                action,
            });
        }
        let imperative = [
            (DENY_IMPERATIVE, Effect::Deny),
            (ASK_IMPERATIVE, Effect::Escalate),
        ];
        for (options, effect) in imperative {
            if let Some(m) = self.eat_any(options) {
                self.set_modal(m)?;
                let action = self.action(false)?;
                return Ok(Rule::Decide {
                    who: Who::All,
                    effect,
                    action,
                });
            }
        }
        self.object_first()
    }

    fn subject(&mut self) -> Result<Option<Who>, String> {
        const ALL: &[&[&str]] = &[
            &["agents"],
            &["all", "agents"],
            &["every", "agent"],
            &["each", "agent"],
            &["any", "agent"],
            &["an", "agent"],
        ];
        if self.eat_any(ALL).is_some() {
            return Ok(Some(Who::All));
        }
        if self.eat(&["agent"]) {
            return Ok(Some(Who::Agents(vec![self.name()?])));
        }
        Ok(None)
    }

    fn name(&mut self) -> Result<String, String> {
        let Some(tok) = self.toks.get(self.pos) else {
            return Err(self.expected("an agent name"));
        };
        let ok = tok.raw.len() <= 64
            && tok.raw != "."
            && tok.raw != ".."
            && tok
                .raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok || self.modal_here().is_some() || tok.word == "agents" {
            return Err(self.expected("an agent name"));
        }
        Ok(self.take(1))
    }

    /// `ci-bot`, `ci-bot and release-bot`, `a, b or c`.
    fn names(&mut self) -> Result<Vec<String>, String> {
        let mut names = vec![self.name()?];
        loop {
            if self.eat(&[","]) {
                let _ = self.eat(&["and"]) || self.eat(&["or"]);
            } else if !(self.eat(&["and"]) || self.eat(&["or"])) {
                return Ok(names);
            }
            names.push(self.name()?);
        }
    }

    fn modal(&mut self) -> Result<Effect, String> {
        for (options, effect) in [
            (DENY, Effect::Deny),
            (ASK, Effect::Escalate),
            (ALLOW, Effect::Allow),
        ] {
            if let Some(m) = self.eat_any(options) {
                self.set_modal(m)?;
                return Ok(effect);
            }
        }
        Err(self.expected(&format!("a modal ({MODAL_LIST})")))
    }

    fn only(&mut self, names: Vec<String>) -> Result<Rule, String> {
        match self.eat_any(ALLOW) {
            Some(m) => self.set_modal(m)?,
            None if self.modal_here().is_some() => {
                return Err(format!(
                    "\"only\" goes with \"may\" (\"only ci-bot may merge pull requests\"), found {}",
                    self.found()
                ));
            }
            None => return Err(self.expected("\"may\"")),
        }
        let action = self.action(true)?;
        Ok(Rule::Only { names, action })
    }

    fn no_agent(&mut self) -> Result<Rule, String> {
        if let Some(m) = self.eat_any(ALLOW) {
            self.set_modal(m)?;
        } else if self.modal_here().is_some() {
            return Err(format!(
                "\"no agent\" goes with \"may\" or a verb (\"no agent may delete repositories\", \"no agent sends more than 20 emails per hour\"), found {}",
                self.found()
            ));
        }
        let verb = self.verb()?;
        if self.eat(&["more", "than"]) {
            return self.budget(verb);
        }
        self.modal.get_or_insert_with(|| "no agent".into());
        let _ = self.eat_any(PREPOSITIONS);
        let action = self.object_of(verb, false)?;
        Ok(Rule::Decide {
            who: Who::All,
            effect: Effect::Deny,
            action,
        })
    }

    fn budget(&mut self, verb: Verb) -> Result<Rule, String> {
        let limit = self.number("a number", MAX_BUDGET_LIMIT)?;
        let action = self.object_of(verb, false)?;
        if self
            .eat_any(&[&["per"], &["a"], &["an"], &["each"], &["every"]])
            .is_none()
        {
            return Err(self.expected("\"per\" and a unit of time (per hour, per 10 minutes)"));
        }
        let count = match self.peek() {
            Some(w) if w.bytes().all(|b| b.is_ascii_digit()) => self.number("a number", 1 << 20)?,
            _ => 1,
        };
        const UNITS: &[(&[&str], u64)] = &[
            (&["second", "seconds", "sec", "secs"], 1),
            (&["minute", "minutes", "min", "mins"], 60),
            (&["hour", "hours"], 3600),
            (&["day", "days"], 86_400),
            (&["week", "weeks"], 7 * 86_400),
        ];
        let word = self.peek().unwrap_or("");
        let Some(unit) = UNITS.iter().find(|(w, _)| w.contains(&word)).map(|u| u.1) else {
            return Err(self.expected("a unit of time (second, minute, hour, day, week)"));
        };
        let window = Window { count, unit };
        if count == 0 || window.seconds() > MAX_BUDGET_WINDOW.as_secs() {
            return Err(format!(
                "a budget's window is from 1 second to 31 days, not {} {}",
                count, self.toks[self.pos].raw
            ));
        }
        self.take(1);
        let over = if self.eat(&["without", "approval"]) {
            Effect::Escalate
        } else {
            Effect::Deny
        };
        Ok(Rule::Budget {
            action,
            limit,
            window,
            over,
            name: String::new(),
        })
    }

    fn number(&mut self, what: &str, max: u64) -> Result<u64, String> {
        let n = self
            .peek()
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|w| w.parse::<u64>().ok());
        match n {
            Some(n) if n <= max => {
                self.take(1);
                Ok(n)
            }
            Some(_) => Err(format!(
                "{} is more than the largest limit, {max}",
                self.found()
            )),
            None => Err(self.expected(what)),
        }
    }

    fn verb(&mut self) -> Result<Verb, String> {
        if let Some(v) = self.peek().and_then(vocab::verb) {
            self.take(1);
            return Ok(v);
        }
        if let Some(second) = self.modal_here().filter(|_| self.modal.is_some()) {
            return Err(self.two_modals(&second));
        }
        Err(self.expected(&format!("a verb ({})", vocab::VERB_LIST)))
    }

    /// verb [preposition] object, after a modal.
    fn action(&mut self, permits: bool) -> Result<Action, String> {
        let verb = self.verb()?;
        let _ = self.eat_any(PREPOSITIONS);
        self.object_of(verb, permits)
    }

    /// `[verb] object verdict`: "mail to outside acme.com needs approval".
    fn object_first(&mut self) -> Result<Rule, String> {
        let verb = match self.peek().and_then(vocab::verb) {
            Some(v) => {
                self.take(1);
                let _ = self.eat_any(PREPOSITIONS);
                Some(v)
            }
            None => None,
        };
        let phrase = match (self.phrase(), verb) {
            (Ok(p), _) => p,
            (Err(e), None) if e.is_empty() => {
                return Err(self.expected(
                    "a subject (agents, an agent, no agent, agent NAME, only NAME), \"never\", \"ask before\", or what the rule is about (e.g. \"mail\", \"opening issues\")",
                ));
            }
            (Err(e), Some(v)) if e.is_empty() => {
                let list = vocab::objects_for(v).join(", ");
                return Err(self.expected(&format!("what to {} ({list})", v.word())));
            }
            (Err(e), _) => return Err(e),
        };
        let Some(verb) = verb.or_else(|| vocab::implied_verb(phrase.object)) else {
            return Err(format!(
                "expected a verb before \"{}\" (e.g. \"opening {} needs approval\"): only mail and slack messages go without one",
                phrase.noun,
                phrase.object.name()
            ));
        };
        let verdicts: Vec<&[&str]> = VERDICTS.iter().map(|(w, _)| *w).collect();
        let Some(m) = self.eat_any(&verdicts) else {
            return Err(self.expected("\"needs approval\", \"is allowed\" or \"is not allowed\""));
        };
        let effect = VERDICTS
            .iter()
            .find(|(w, _)| w.join(" ") == m.to_lowercase())
            .map_or(Effect::Deny, |(_, e)| *e);
        self.modal = Some(m);
        let action = self.build(verb, phrase, effect == Effect::Allow)?;
        Ok(Rule::Decide {
            who: Who::All,
            effect,
            action,
        })
    }
}
