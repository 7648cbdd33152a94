//! RFC 5322 §3.4 address lists, read strictly: the recipients policy sees must be the ones
//! any conforming reader sees, so whatever two readers could split differently is refused.
//!
//! Accepted: `a@x.com`, `Name <a@x.com>`, `"Doe, J." <a@x.com>`, `J. Doe <a@x.com>`, groups
//! (`team: a@x.com, b@y.com;`, `undisclosed-recipients:;`), comments where whitespace may
//! stand outside an address (`a@x.com (Alice)`), UTF-8 and encoded words in display names.
//! Refused: a missing comma (`a@x.com b@y.com`), a display name without angle brackets, text
//! after an address, empty list elements, nested groups, source routes (`<@r:a@x.com>`),
//! whitespace or comments inside an address, quoted local parts, domain literals, non-ASCII
//! addresses, and domains that are not dot-separated letter-digit-hyphen labels.

use super::budget::Budget;
use super::error::{BodyError, shown};

/// The addresses of one address-list header value (unfolded), lowercased.
pub(crate) fn list(
    value: &str,
    header: &str,
    budget: &mut Budget,
) -> Result<Vec<String>, BodyError> {
    let mut p = Parser {
        b: value.as_bytes(),
        i: 0,
        value,
        header,
    };
    let mut out = Vec::new();
    p.cfws()?;
    if p.peek().is_none() {
        return Ok(out);
    }
    loop {
        budget.spend(1, "addresses")?;
        p.address(&mut out, false)?;
        p.cfws()?;
        match p.peek() {
            None => return Ok(out),
            Some(b',') => p.i += 1,
            Some(_) => {
                return Err(
                    p.err("two addresses without a comma between them, or text after an address")
                );
            }
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    value: &'a str,
    header: &'a str,
}

/// `atext` (RFC 5322 §3.2.3).
fn atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
}

/// What a display-name word may hold: atext, dots (obs-phrase) and UTF-8 (RFC 6532).
fn phrase_char(c: u8) -> bool {
    atext(c) || c == b'.' || c >= 0x80
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, why: &str) -> BodyError {
        BodyError::Ambiguous(format!(
            "the {} header is not a plain list of e-mail addresses ({why}): {}",
            self.header,
            shown(self.value)
        ))
    }

    /// Skips whitespace and comments (nested, with quoted pairs).
    fn cfws(&mut self) -> Result<(), BodyError> {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' => self.i += 1,
                b'(' => {
                    let mut depth = 0usize;
                    loop {
                        match self.peek() {
                            None => return Err(self.err("an unterminated comment")),
                            Some(b'\\') => self.i += 2,
                            Some(b'(') => {
                                depth += 1;
                                self.i += 1;
                            }
                            Some(b')') => {
                                depth -= 1;
                                self.i += 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            Some(_) => self.i += 1,
                        }
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn quoted(&mut self) -> Result<(), BodyError> {
        self.i += 1;
        loop {
            match self.peek() {
                None => return Err(self.err("an unterminated quoted string")),
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// One mailbox, or (outside a group) a group of mailboxes.
    fn address(&mut self, out: &mut Vec<String>, in_group: bool) -> Result<(), BodyError> {
        let mut words = 0;
        // The first word: start, end, quoted.
        let mut first = (0, 0, false);
        loop {
            self.cfws()?;
            let start = self.i;
            match self.peek() {
                Some(c) if phrase_char(c) => {
                    while self.peek().is_some_and(phrase_char) {
                        self.i += 1;
                    }
                }
                Some(b'"') => self.quoted()?,
                _ => break,
            }
            if words == 0 {
                first = (start, self.i, self.b[start] == b'"');
            }
            words += 1;
        }
        match self.peek() {
            Some(b'@') => {
                let (start, end, quoted) = first;
                if words != 1 || quoted {
                    return Err(
                        self.err("a display name without angle brackets, or a quoted local part")
                    );
                }
                if end != self.i {
                    return Err(self.err("whitespace or a comment before @"));
                }
                self.i = start;
                let a = self.addr_spec()?;
                out.push(a);
            }
            Some(b'<') => {
                self.i += 1;
                if self.peek() == Some(b'@') {
                    return Err(self.err("a source route"));
                }
                let a = self.addr_spec()?;
                if self.peek() != Some(b'>') {
                    return Err(self.err("text inside the angle brackets after the address"));
                }
                self.i += 1;
                out.push(a);
            }
            Some(b':') if !in_group && words > 0 => {
                self.i += 1;
                self.cfws()?;
                if self.peek() == Some(b';') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.address(out, true)?;
                    self.cfws()?;
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b';') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("a group not closed by ;")),
                    }
                }
            }
            Some(b':') if in_group => return Err(self.err("a group inside a group")),
            None | Some(b',' | b';' | b':') => return Err(self.err("an element without @")),
            Some(c) => {
                return Err(self.err(&format!(
                    "unexpected {:?}",
                    char::from(c).escape_default().to_string()
                )));
            }
        }
        Ok(())
    }

    /// `local@domain` at the cursor, with nothing between its pieces: a dot-atom local part
    /// and a domain of letter-digit-hyphen labels.
    fn addr_spec(&mut self) -> Result<String, BodyError> {
        let start = self.i;
        while self.peek().is_some_and(|c| atext(c) || c == b'.') {
            self.i += 1;
        }
        let local = &self.value[start..self.i];
        if local.is_empty()
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(self.err("a local part that is not a dot-atom"));
        }
        if self.peek() != Some(b'@') {
            return Err(self.err("an address without @, or with a quoted or non-ASCII local part"));
        }
        self.i += 1;
        let d = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        {
            self.i += 1;
        }
        let domain = &self.value[d..self.i];
        let labels_ok = !domain.is_empty()
            && domain
                .split('.')
                .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
        if !labels_ok {
            return Err(
                self.err("a domain that is not dot-separated letter, digit and hyphen labels")
            );
        }
        Ok(self.value[start..self.i].to_ascii_lowercase())
    }
}
