//! A multi-document YAML stream cut at its `---` lines, so that the documents inject leaves
//! alone keep every byte (comments included) and only the changed ones are re-serialized.

use yaml_serde::Value;

/// One document of a stream: the `---` line before it (empty for the first) and its text.
pub(super) struct Document<'a> {
    pub(super) separator: &'a str,
    pub(super) body: &'a str,
}

/// Cuts `input` at lines that are exactly `---` (optionally followed by a comment);
/// concatenating every separator and body gives `input` back.
pub(super) fn split(input: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let (mut sep_start, mut sep_end, mut pos) = (0, 0, 0);
    for line in input.split_inclusive('\n') {
        if is_separator(line) {
            docs.push(Document {
                separator: &input[sep_start..sep_end],
                body: &input[sep_end..pos],
            });
            sep_start = pos;
            sep_end = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(Document {
        separator: &input[sep_start..sep_end],
        body: &input[sep_end..],
    });
    docs
}

fn is_separator(line: &str) -> bool {
    let Some(rest) = line.trim_end_matches(['\n', '\r']).strip_prefix("---") else {
        return false;
    };
    let trimmed = rest.trim_start();
    trimmed.is_empty() || (trimmed.starts_with('#') && rest.len() > trimmed.len())
}

/// `value` serialized in place of `body`, keeping the comments that lead the document (a
/// Helm `# Source:` line) and whatever follows a `...` end marker.
pub(super) fn reserialize(body: &str, value: &Value) -> Result<String, yaml_serde::Error> {
    let mut lead = 0;
    for line in body.split_inclusive('\n') {
        let t = line.trim();
        if !(t.is_empty() || t.starts_with('#')) {
            break;
        }
        lead += line.len();
    }
    let mut trailer_at = body.len();
    let mut pos = 0;
    for line in body.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']).trim_end() == "..." {
            trailer_at = pos;
            break;
        }
        pos += line.len();
    }
    let mut out = String::with_capacity(body.len() * 2);
    out.push_str(&body[..lead.min(trailer_at)]);
    out.push_str(&yaml_serde::to_string(value)?);
    out.push_str(&body[trailer_at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_byte() {
        let input = "---\n# c\na: 1\n--- # two\nb: 2\n...\n---\r\nc: 3";
        let docs = split(input);
        let joined: String = docs
            .iter()
            .map(|d| [d.separator, d.body].concat())
            .collect();
        assert_eq!(joined, input);
        let bodies: Vec<_> = docs.iter().map(|d| d.body).collect();
        assert_eq!(bodies, ["", "# c\na: 1\n", "b: 2\n...\n", "c: 3"]);
    }

    #[test]
    fn only_bare_separators_split() {
        for line in ["--- !tag\n", "----\n", "---x\n", "  ---\n", "--- {a: 1}\n"] {
            assert!(!is_separator(line), "{line:?}");
        }
        for line in ["---\n", "---", "--- # x\n", "---\t\n"] {
            assert!(is_separator(line), "{line:?}");
        }
    }

    #[test]
    fn reserialize_keeps_leading_comments_and_trailer() {
        let body = "# Source: c/t.yaml\na:   1\n...\n# after\n";
        let value: Value = yaml_serde::from_str(body).unwrap();
        let out = reserialize(body, &value).unwrap();
        assert_eq!(out, "# Source: c/t.yaml\na: 1\n...\n# after\n");
    }
}
