//! The fixed phrases of the grammar: modals, the verdicts of object-first sentences,
//! determiners and prepositions. Longer phrases come first where one starts another
//! ("may not" before "may").

use crate::policy::decision::Effect;

use super::token::Tok;

pub(super) const ALLOW: &[&[&str]] = &[
    &["are", "allowed", "to"],
    &["is", "allowed", "to"],
    &["may"],
    &["can"],
];

pub(super) const DENY: &[&[&str]] = &[
    &["are", "not", "allowed", "to"],
    &["is", "not", "allowed", "to"],
    &["must", "never"],
    &["must", "not"],
    &["may", "not"],
    &["can", "not"],
    &["should", "never"],
    &["should", "not"],
    &["cannot"],
    &["can't"],
    &["mustn't"],
    &["never"],
    &["do", "not"],
    &["does", "not"],
    &["don't"],
    &["doesn't"],
];

pub(super) const ASK: &[&[&str]] = &[
    &["must", "ask", "before"],
    &["should", "ask", "before"],
    &["always", "ask", "before"],
    &["must", "get", "approval", "before"],
    &["must", "get", "approval", "to"],
    &["need", "approval", "before"],
    &["needs", "approval", "before"],
    &["need", "approval", "to"],
    &["needs", "approval", "to"],
    &["need", "approval", "for"],
    &["needs", "approval", "for"],
    &["require", "approval", "before"],
    &["requires", "approval", "before"],
    &["require", "approval", "for"],
    &["requires", "approval", "for"],
    &["ask", "before"],
    &["asks", "before"],
];

/// How a sentence that starts with its object ends.
pub(super) const VERDICTS: &[(&[&str], Effect)] = &[
    (&["needs", "approval"], Effect::Escalate),
    (&["need", "approval"], Effect::Escalate),
    (&["requires", "approval"], Effect::Escalate),
    (&["require", "approval"], Effect::Escalate),
    (&["is", "not", "allowed"], Effect::Deny),
    (&["are", "not", "allowed"], Effect::Deny),
    (&["is", "forbidden"], Effect::Deny),
    (&["are", "forbidden"], Effect::Deny),
    (&["is", "denied"], Effect::Deny),
    (&["are", "denied"], Effect::Deny),
    (&["is", "allowed"], Effect::Allow),
    (&["are", "allowed"], Effect::Allow),
];

pub(super) const MODAL_LIST: &str = "may, must not, never, ask before, needs approval to";

/// Words that may stand before an object and change nothing.
pub(super) const DETERMINERS: &[&[&str]] = &[
    &["any"],
    &["all"],
    &["every"],
    &["each"],
    &["the"],
    &["a"],
    &["an"],
];

pub(super) const PREPOSITIONS: &[&[&str]] = &[&["to"], &["on"], &["in"], &["into"], &["from"]];

pub(super) const DENY_IMPERATIVE: &[&[&str]] = &[&["never"], &["do", "not"], &["don't"]];

pub(super) const ASK_IMPERATIVE: &[&[&str]] = &[
    &["always", "ask", "before"],
    &["ask", "before"],
    &["require", "approval", "before"],
    &["require", "approval", "for"],
    &["require", "approval", "to"],
];

/// The modal (any kind) that starts at `pos`.
pub(super) fn modal_at(toks: &[Tok], pos: usize) -> Option<String> {
    let at = |words: &[&str]| {
        words
            .iter()
            .enumerate()
            .all(|(i, w)| toks.get(pos + i).is_some_and(|t| t.word == *w))
    };
    let verdicts = VERDICTS.iter().map(|(w, _)| w);
    DENY.iter()
        .chain(ASK)
        .chain(ALLOW)
        .chain(verdicts)
        .find(|o| at(o))
        .map(|o| o.join(" "))
}
