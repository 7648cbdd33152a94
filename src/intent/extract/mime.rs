//! The parts of MIME the extractors read: a header section (RFC 5322 §2.2), header
//! parameters (`type/subtype; name=value`, RFC 2045 §5.1) and multipart bodies (RFC 2046
//! §5.1). Each is a single linear pass, and each refuses what readers are known to read
//! differently — bare CR or LF, line endings that change mid-way, folding with nothing to
//! fold onto, a parameter given twice, a boundary followed by other text — instead of
//! picking one reading.

use memchr::memmem;

use super::budget::Budget;
use super::error::{BodyError, ambiguous, invalid, shown};

/// How lines end. A header section or multipart body uses one kind throughout: CRLF as the
/// RFCs say, or bare LF as Unix tools (Python's `email` among them) write; a mix is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eol {
    Crlf,
    Lf,
}

impl Eol {
    fn bytes(self) -> &'static [u8] {
        match self {
            Eol::Crlf => b"\r\n",
            Eol::Lf => b"\n",
        }
    }
}

/// One header field: its name and raw value (after the colon, folds included).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) name: &'a str,
    raw: &'a [u8],
}

impl Field<'_> {
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value unfolded (the line breaks of folds removed), as UTF-8 text.
    pub(crate) fn value(&self) -> Result<String, BodyError> {
        let bytes: Vec<u8> = self
            .raw
            .iter()
            .copied()
            .filter(|b| *b != b'\r' && *b != b'\n')
            .collect();
        String::from_utf8(bytes)
            .map_err(|_| invalid(format!("the {} header is not UTF-8 text", self.name)))
    }
}

/// A header section and what follows it.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    pub(crate) fields: Vec<Field<'a>>,
    /// What follows the blank line (empty when there is none).
    pub(crate) body: &'a [u8],
    /// The section ended with a blank line (rather than with the input).
    pub(crate) complete: bool,
}

impl<'a> Head<'a> {
    /// The only field called `name`; two of them are ambiguous.
    pub(crate) fn single(&self, name: &str, what: &str) -> Result<Option<Field<'a>>, BodyError> {
        let mut found = None;
        for f in self.fields.iter().filter(|f| f.is(name)) {
            if found.is_some() {
                return Err(ambiguous(format!("{what} has two {name} headers")));
            }
            found = Some(*f);
        }
        Ok(found)
    }

    /// The `Content-Type`, parsed; `None` when absent.
    pub(crate) fn content_type(
        &self,
        what: &str,
        lenient: bool,
    ) -> Result<Option<Params>, BodyError> {
        match self.single("Content-Type", what)? {
            Some(f) => {
                params(&f.value()?, &format!("the Content-Type of {what}"), lenient).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Refuses a `Content-Transfer-Encoding` that changes the bytes (base64,
    /// quoted-printable): readers that decode and readers that do not would see different
    /// values.
    pub(crate) fn identity_encoding(&self, what: &str) -> Result<(), BodyError> {
        if let Some(f) = self.single("Content-Transfer-Encoding", what)? {
            let v = f.value()?;
            let v = v.trim();
            if !["7bit", "8bit", "binary"]
                .iter()
                .any(|e| v.eq_ignore_ascii_case(e))
            {
                return Err(ambiguous(format!(
                    "{what} has Content-Transfer-Encoding {}; send the value as is",
                    shown(v)
                )));
            }
        }
        Ok(())
    }
}

/// Reads a header section from the start of `bytes`. `eol` is the line ending the
/// surrounding body uses, or `None` to take it from the first line.
pub(crate) fn head<'a>(
    bytes: &'a [u8],
    eol: Option<Eol>,
    what: &str,
    budget: &mut Budget,
) -> Result<Head<'a>, BodyError> {
    let eol = eol.unwrap_or(match memchr::memchr(b'\n', bytes) {
        Some(i) if i > 0 && bytes[i - 1] == b'\r' => Eol::Crlf,
        Some(_) => Eol::Lf,
        None => Eol::Crlf,
    });
    let mut fields: Vec<Field<'a>> = Vec::new();
    // Where the last field's value starts, to extend it over its folds.
    let mut value_start = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        budget.spend(1, "header lines")?;
        let (end, next) = match memchr::memchr(b'\n', &bytes[pos..]) {
            Some(i) => {
                let nl = pos + i;
                match eol {
                    Eol::Crlf if nl == pos || bytes[nl - 1] != b'\r' => {
                        return Err(ambiguous(format!(
                            "{what} has a bare LF (a line feed without carriage return) in its headers"
                        )));
                    }
                    Eol::Crlf => (nl - 1, nl + 1),
                    Eol::Lf => (nl, nl + 1),
                }
            }
            None => (bytes.len(), bytes.len()),
        };
        let line = &bytes[pos..end];
        if let Some(&c) = line
            .iter()
            .find(|&&c| (c < 0x20 && c != b'\t') || c == 0x7f)
        {
            return Err(ambiguous(if c == b'\r' {
                format!("{what} has a bare CR (a carriage return without line feed) in its headers")
            } else {
                format!("{what} has a control character (0x{c:02x}) in its headers")
            }));
        }
        if line.is_empty() {
            return Ok(Head {
                fields,
                body: &bytes[next..],
                complete: true,
            });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            let Some(last) = fields.last_mut() else {
                return Err(ambiguous(format!(
                    "{what} begins with a folded continuation line, before any header"
                )));
            };
            if line.iter().all(|c| *c == b' ' || *c == b'\t') {
                return Err(ambiguous(format!(
                    "{what} has a header continuation line of only whitespace"
                )));
            }
            last.raw = &bytes[value_start..end];
        } else {
            let Some(colon) = memchr::memchr(b':', line) else {
                return Err(ambiguous(format!(
                    "{what} has a header line without a colon: {}",
                    shown(&String::from_utf8_lossy(line))
                )));
            };
            let name = &line[..colon];
            // Field names are printable ASCII other than the colon (RFC 5322 §2.2); the
            // obsolete space before the colon is read differently by different readers.
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty() && n.bytes().all(|c| (33..=126).contains(&c)))
                .ok_or_else(|| {
                    ambiguous(format!(
                        "{what} has a header with an invalid name: {}",
                        shown(&String::from_utf8_lossy(name))
                    ))
                })?;
            value_start = pos + colon + 1;
            fields.push(Field {
                name,
                raw: &bytes[value_start..end],
            });
        }
        pos = next;
    }
    Ok(Head {
        fields,
        body: &bytes[bytes.len()..],
        complete: false,
    })
}

/// A header value's main token (`type/subtype`, `form-data`) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    /// Lowercase.
    pub(crate) main: String,
    /// Names lowercase, values as sent (unquoted).
    pub(crate) params: Vec<(String, String)>,
}

impl Params {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_token(c: u8) -> bool {
    c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&c)
}

/// Parses `main *(; name=value)`. Strict: a parameter named twice, a quoted value with a
/// backslash (quoted-pair, which browsers do not write and servers read differently) and
/// an RFC 2231 `name*` are refused. `lenient` (mail parts, only counted) allows the last
/// two.
pub(crate) fn params(value: &str, what: &str, lenient: bool) -> Result<Params, BodyError> {
    let b = value.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    ws(&mut i);
    let start = i;
    while i < b.len() && (is_token(b[i]) || b[i] == b'/') {
        i += 1;
    }
    if i == start {
        return Err(invalid(format!("{what} is empty or malformed")));
    }
    let main = value[start..i].to_ascii_lowercase();
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        ws(&mut i);
        if i == b.len() {
            break;
        }
        if b[i] != b';' {
            return Err(ambiguous(format!(
                "{what} has unexpected text after {main}: {}",
                shown(&value[i..])
            )));
        }
        i += 1;
        ws(&mut i);
        if i == b.len() {
            break;
        }
        let name_start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        let name = value[name_start..i].to_ascii_lowercase();
        if name.is_empty() || i == b.len() || b[i] != b'=' {
            return Err(ambiguous(format!(
                "{what} has a malformed parameter: {}",
                shown(&value[name_start..])
            )));
        }
        if name.ends_with('*') && !lenient {
            return Err(ambiguous(format!(
                "{what} has an RFC 2231 parameter {name}; send plain parameters"
            )));
        }
        i += 1;
        let v = if b.get(i) == Some(&b'"') {
            i += 1;
            let s = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    if !lenient {
                        return Err(ambiguous(format!(
                            "{what} has a backslash in the quoted parameter {name}"
                        )));
                    }
                    i += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(ambiguous(format!(
                    "{what} has an unterminated quoted parameter {name}"
                )));
            }
            i += 1;
            value[s..i - 1].to_owned()
        } else {
            let s = i;
            while i < b.len() && is_token(b[i]) {
                i += 1;
            }
            if s == i {
                return Err(ambiguous(format!("{what} has an empty parameter {name}")));
            }
            value[s..i].to_owned()
        };
        if params.iter().any(|(n, _)| *n == name) {
            return Err(ambiguous(format!("{what} has the parameter {name} twice")));
        }
        params.push((name, v));
    }
    Ok(Params { main, params })
}

/// Valid boundary characters (RFC 2046 §5.1.1), 1–70 of them, not ending in a space.
fn valid_boundary(b: &str) -> bool {
    (1..=70).contains(&b.len())
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

/// Splits a multipart body into its parts' raw bytes (headers and content). Strict mode
/// (what AgentGate judges: uploads, forms) wants the first delimiter at the very start,
/// nothing after the closing one but a line end, and no padding after delimiters; lenient
/// mode (a message's own MIME tree, read only to count attachments) allows a preamble, an
/// epilogue and padding, as RFC 2046 does. Either way the line ending never changes and a
/// line that starts with the delimiter but goes on with other text is refused.
pub(crate) fn multipart<'a>(
    boundary: &str,
    body: &'a [u8],
    lenient: bool,
    what: &str,
    budget: &mut Budget,
) -> Result<(Vec<&'a [u8]>, Eol), BodyError> {
    if !valid_boundary(boundary) {
        return Err(ambiguous(format!(
            "{what} has an invalid boundary {}",
            shown(boundary)
        )));
    }
    let dash = format!("--{boundary}");
    let dash = dash.as_bytes();
    let first = if body.starts_with(dash) {
        0
    } else if lenient {
        let mut nl_dash = b"\n".to_vec();
        nl_dash.extend_from_slice(dash);
        memmem::find(body, &nl_dash)
            .map(|i| i + 1)
            .ok_or_else(|| invalid(format!("{what} has no boundary delimiter")))?
    } else {
        return Err(ambiguous(format!(
            "{what} does not begin with its boundary delimiter"
        )));
    };
    // The first delimiter line fixes the line ending.
    let mut k = first + dash.len();
    if lenient {
        while k < body.len() && (body[k] == b' ' || body[k] == b'\t') {
            k += 1;
        }
    }
    let eol = if body[k..].starts_with(b"\r\n") {
        Eol::Crlf
    } else if body[k..].starts_with(b"\n") {
        Eol::Lf
    } else if body[k..].starts_with(b"--") {
        return Err(invalid(format!("{what} has no parts")));
    } else {
        return Err(ambiguous(format!(
            "{what}: its boundary delimiter is followed by other text"
        )));
    };
    if first > 0 && (first >= 2 && body[first - 2] == b'\r') != (eol == Eol::Crlf) {
        return Err(ambiguous(format!(
            "{what} mixes CRLF and bare LF line endings"
        )));
    }
    let mut cursor = k + eol.bytes().len();
    let mut parts = Vec::new();
    let mut nl_dash = b"\n".to_vec();
    nl_dash.extend_from_slice(dash);
    loop {
        if body[cursor..].starts_with(dash) {
            return Err(ambiguous(format!(
                "{what} has an empty part (two boundary delimiters in a row)"
            )));
        }
        let Some(found) = memmem::find(&body[cursor..], &nl_dash) else {
            return Err(ambiguous(format!(
                "{what} has no closing boundary delimiter"
            )));
        };
        budget.spend(1, "multipart parts")?;
        let nl = cursor + found;
        let cr = nl > cursor && body[nl - 1] == b'\r';
        if cr != (eol == Eol::Crlf) {
            return Err(ambiguous(format!(
                "{what} mixes CRLF and bare LF line endings"
            )));
        }
        parts.push(&body[cursor..if cr { nl - 1 } else { nl }]);
        let after = nl + 1 + dash.len();
        let rest = &body[after..];
        if let Some(tail) = rest.strip_prefix(b"--") {
            let clean = tail.is_empty() || tail == eol.bytes();
            if !clean && !lenient {
                return Err(ambiguous(format!(
                    "{what} has text after its closing boundary delimiter"
                )));
            }
            return Ok((parts, eol));
        }
        let mut k = after;
        if lenient {
            while k < body.len() && (body[k] == b' ' || body[k] == b'\t') {
                k += 1;
            }
        }
        if !body[k..].starts_with(eol.bytes()) {
            return Err(ambiguous(format!(
                "{what} has a line that starts with its boundary delimiter but goes on with other text"
            )));
        }
        cursor = k + eol.bytes().len();
    }
}

/// Most multipart levels inside a message before it is refused as too complex.
const MAX_MIME_DEPTH: usize = 16;

/// How many attachments a message carries: leaf parts (below the top level) that are
/// marked as attachments, carry a file name or are not text. A nested message counts as
/// one attachment and is not opened.
pub(crate) fn attachments(
    head: &Head<'_>,
    depth: usize,
    budget: &mut Budget,
) -> Result<usize, BodyError> {
    let what = if depth == 0 {
        "the e-mail message".to_owned()
    } else {
        format!("a part of the e-mail message (level {depth})")
    };
    let ct = head.content_type(&what, true)?;
    let main = ct.as_ref().map_or("text/plain", |c| c.main.as_str());
    if main.starts_with("multipart/") {
        if depth >= MAX_MIME_DEPTH {
            return Err(BodyError::TooComplex(format!(
                "the e-mail message nests multipart parts more than {MAX_MIME_DEPTH} deep"
            )));
        }
        let boundary = ct
            .as_ref()
            .and_then(|c| c.get("boundary"))
            .ok_or_else(|| invalid(format!("{what} is multipart without a boundary")))?;
        let (parts, eol) = multipart(boundary, head.body, true, &what, budget)?;
        let mut n = 0;
        for part in parts {
            let h = self::head(part, Some(eol), &what, budget)?;
            n += attachments(&h, depth + 1, budget)?;
        }
        return Ok(n);
    }
    if depth == 0 {
        return Ok(0);
    }
    let disposition = match head.single("Content-Disposition", &what)? {
        Some(f) => Some(params(&f.value()?, &what, true)?),
        None => None,
    };
    let attached = disposition
        .as_ref()
        .is_some_and(|d| d.main == "attachment" || d.get("filename").is_some())
        || ct.as_ref().is_some_and(|c| c.get("name").is_some())
        || !main.starts_with("text/");
    Ok(usize::from(attached))
}
