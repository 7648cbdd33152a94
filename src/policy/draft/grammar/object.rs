//! Object phrases: the noun, its determiner and adjective, its qualifiers (`in acme`,
//! `to outside acme.com`, `to public channels`), and the check that they fit the verb.

use super::super::ir::{Action, Object, Ops, Reach, Scope, Verb};
use super::super::vocab;
use super::Parser;
use super::phrases::DETERMINERS;

impl Parser<'_> {
    /// The object of `verb` with its qualifiers, checked against it.
    pub(super) fn object_of(&mut self, verb: Verb, permits: bool) -> Result<Action, String> {
        let before = self.last.clone();
        let phrase = self.phrase().map_err(|e| {
            if e.is_empty() {
                let list = vocab::objects_for(verb).join(", ");
                let last = before.unwrap_or_default();
                format!(
                    "expected what to {} ({list}) after \"{last}\", found {}",
                    verb.word(),
                    self.found()
                )
            } else {
                e
            }
        })?;
        self.build(verb, phrase, permits)
    }

    /// An object phrase; `Err("")` when no object starts here.
    pub(super) fn phrase(&mut self) -> Result<Phrase, String> {
        let start = self.pos;
        let _ = self.eat_any(DETERMINERS);
        let mut reach = None;
        if self.eat(&["external"]) {
            reach = Some(Reach::External);
        } else if self.eat(&["public"]) {
            reach = Some(Reach::Public);
        }
        if let Some(w) = self.peek().filter(|w| vocab::AMBIGUOUS_NOUNS.contains(w)) {
            return Err(format!(
                "\"{w}\" is ambiguous: say \"slack messages\" or \"mail\""
            ));
        }
        let Some((words, object)) = vocab::NOUNS.iter().find(|(words, _)| self.at(words)) else {
            if self.pos == start {
                return Err(String::new());
            }
            return Err(self.expected(&format!("what the rule is about ({})", vocab::OBJECT_LIST)));
        };
        let noun = self.take(words.len());
        let mut phrase = Phrase {
            object: *object,
            noun,
            scope: None,
            reach,
        };
        self.qualifiers(&mut phrase)?;
        Ok(phrase)
    }

    fn qualifiers(&mut self, phrase: &mut Phrase) -> Result<(), String> {
        const PUBLIC: &[&[&str]] = &[
            &["to", "public", "channels"],
            &["in", "public", "channels"],
            &["to", "a", "public", "channel"],
            &["in", "a", "public", "channel"],
        ];
        const OUTSIDE: &[&[&str]] = &[
            &["to", "anyone", "outside"],
            &["to", "anybody", "outside"],
            &["to", "someone", "outside"],
            &["to", "people", "outside"],
            &["to", "recipients", "outside"],
            &["to", "addresses", "outside"],
            &["to", "outside"],
            &["outside"],
        ];
        loop {
            if self.eat_any(PUBLIC).is_some() {
                set_once(&mut phrase.reach, Reach::Public, "whom it reaches")?;
            } else if self.eat_any(OUTSIDE).is_some() {
                let domains = self.domains()?;
                set_once(
                    &mut phrase.reach,
                    Reach::Outside(domains),
                    "whom it reaches",
                )?;
            } else if self.eat(&["in"]) {
                let scope = self.scope()?;
                set_once(&mut phrase.scope, scope, "where on GitHub")?;
            } else {
                return Ok(());
            }
        }
    }

    /// `acme`, `the acme org`, `organization acme`, `acme/web`.
    fn scope(&mut self) -> Result<Scope, String> {
        let _ = self.eat(&["the"]);
        let prefixed = self.eat_any(&[&["org"], &["organization"]]).is_some();
        let what = "a GitHub organization (letters, digits, hyphens) or owner/repository";
        let Some(tok) = self.toks.get(self.pos) else {
            return Err(self.expected(what));
        };
        let word = tok.word.clone();
        let scope = match word.split_once('/') {
            Some((owner, repo)) if github_org(owner) && github_repo(repo) => Scope::Repo(word),
            None if github_org(&word) => Scope::Org(word),
            _ => return Err(self.expected(what)),
        };
        self.take(1);
        if !prefixed {
            let _ = self.eat_any(&[&["org"], &["organization"]]);
        }
        Ok(scope)
    }

    /// `acme.com`, `acme.com and acme.org`.
    fn domains(&mut self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        loop {
            match self.peek().filter(|d| mail_domain(d)) {
                Some(d) => {
                    out.push(d.to_owned());
                    self.take(1);
                }
                None => return Err(self.expected("a mail domain such as acme.com")),
            }
            let more = self.at(&[","]) || self.at(&["and"]) || self.at(&["or"]);
            let next_is_domain = (1..=2).any(|k| {
                self.toks
                    .get(self.pos + k)
                    .is_some_and(|t| mail_domain(&t.word))
            });
            if !(more && next_is_domain) {
                out.sort();
                out.dedup();
                return Ok(out);
            }
            let _ = self.eat(&[","]);
            let _ = self.eat(&["and"]) || self.eat(&["or"]);
        }
    }

    /// Checks that the phrase's qualifiers fit the verb and object.
    pub(super) fn build(
        &self,
        verb: Verb,
        phrase: Phrase,
        permits: bool,
    ) -> Result<Action, String> {
        let Some(ops) = vocab::meaning(verb, phrase.object) else {
            let verbs = vocab::verbs_for(phrase.object).join(", ");
            return Err(format!(
                "\"{}\" cannot be done to {}: they can be {verbs}",
                verb.word(),
                phrase.object.name()
            ));
        };
        if phrase.scope.is_some() && !phrase.object.on_github() {
            return Err(format!(
                "\"in <organization>\" narrows GitHub objects (anything, github, repositories, issues, pull requests), not {}",
                phrase.object.name()
            ));
        }
        if let (Some(Scope::Repo(r)), Verb::Create, Object::Repositories) =
            (&phrase.scope, verb, phrase.object)
        {
            return Err(format!(
                "\"in {r}\" names a repository, and repositories are created in an organization (\"in {}\")",
                r.split('/').next().unwrap_or_default()
            ));
        }
        match &phrase.reach {
            Some(Reach::Outside(_) | Reach::External) if ops != Ops::Names(vocab::MAIL_SENDING) => {
                return Err(format!(
                    "\"external\" and \"outside <domain>\" are about mail recipients: they go with sending mail, not {} {}",
                    verb.gerund(),
                    phrase.object.name()
                ));
            }
            Some(Reach::Public) if ops != Ops::Names(vocab::SLACK_POSTING) => {
                return Err(format!(
                    "\"public channels\" goes with posting slack messages, not {} {}",
                    verb.gerund(),
                    phrase.object.name()
                ));
            }
            Some(Reach::Public) if permits => {
                return Err("a Slack request does not show whether its channel is public, so \"public channels\" can only restrict (never, ask before, a budget), not allow".into());
            }
            _ => {}
        }
        Ok(Action {
            verb,
            object: phrase.object,
            ops,
            scope: phrase.scope,
            reach: phrase.reach,
        })
    }
}

/// An object with its qualifiers, before it is checked against a verb.
pub(super) struct Phrase {
    pub(super) object: Object,
    /// The noun as written, for messages.
    pub(super) noun: String,
    pub(super) scope: Option<Scope>,
    pub(super) reach: Option<Reach>,
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("it says {what} twice: one qualifier of each kind"));
    }
    *slot = Some(value);
    Ok(())
}

/// A GitHub organization or user name: letters, digits and single hyphens, ≤ 39.
fn github_org(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn github_repo(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A DNS name with at least two labels: `acme.com`, `mail.acme.co.uk`.
pub(super) fn mail_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && s.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}
