//! The words of a sentence, as the parser and the phrase tables read them.

/// A word of a sentence: as written, and lowercased for matching.
#[derive(Debug, Clone)]
pub(super) struct Tok {
    /// Lowercased, for matching.
    pub(super) word: String,
    /// As written.
    pub(super) raw: String,
}

/// The words of a sentence; a trailing comma is a word of its own, final punctuation is
/// dropped.
pub(super) fn tokenize(text: &str) -> Vec<Tok> {
    let text = text
        .trim()
        .trim_end_matches(['.', '!', ';'])
        .replace('’', "'");
    let mut out = Vec::new();
    for piece in text.split_whitespace() {
        let (body, comma) = match piece.strip_suffix(',') {
            Some(b) => (b, true),
            None => (piece, false),
        };
        if !body.is_empty() {
            out.push(Tok {
                word: body.to_lowercase(),
                raw: body.to_owned(),
            });
        }
        if comma {
            out.push(Tok {
                word: ",".into(),
                raw: ",".into(),
            });
        }
    }
    out
}
