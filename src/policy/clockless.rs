//! Whether a policy can read the request's time (`input.context.time`). The tuple carries
//! the time to the second, so two requests that differ only in it are distinct inputs; a
//! policy that cannot read it decides them alike, and its decisions (in the cache, in a
//! replay) can be keyed without it.
//!
//! The check is textual and conservative: a policy is clockless only when its Rego never
//! names `time` and reaches `input` solely through a named path that is not the context as
//! a whole (`input.action…`, `input.context.body…`, `object.get(input, ["action", …])`).
//! Anything it cannot read that way (`input` bare, `input[k]`, `input.context` whole,
//! `import input…`) counts as reading the time.

/// Whether none of `rego` can read `input.context.time`.
pub(super) fn clockless<'a>(mut rego: impl Iterator<Item = &'a str>) -> bool {
    rego.all(|text| {
        // An escape can spell `time` without the word (`"t\u0069me"`).
        if text.contains("\\u") {
            return false;
        }
        let code = code_only(text);
        !has_word(&code, "time") && inputs_named(&code)
    })
}

/// The text with comments and string contents blanked, so words inside them do not count;
/// a string's quotes stay, so `["action"]` still reads as a literal.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            literal.push('\\');
                            if let Some(n) = chars.next() {
                                literal.push(n);
                            }
                        }
                        '"' => break,
                        c => literal.push(c),
                    }
                }
                // Kept: a literal path segment is read below; `time` in one still counts.
                out.push_str(&literal);
                out.push('"');
            }
            '`' => {
                out.push('"');
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                    out.push(c);
                }
                out.push('"');
            }
            c => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `word` appears as a whole identifier (or a whole string literal's word).
fn has_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Whether every use of `input` names a path below it that is not the whole context.
fn inputs_named(code: &str) -> bool {
    code.match_indices("input").all(|(i, _)| {
        let before = code[..i].chars().next_back();
        let rest = &code[i + "input".len()..];
        if before.is_some_and(|c| is_ident(c) || c == '.') || rest.starts_with(is_ident) {
            return true; // part of another name (`data.input`, `inputs`)
        }
        if let Some(path) = rest.strip_prefix('.') {
            return named_below(path);
        }
        // object.get(input, ["action", ...], default): a literal path.
        let head = code[..i].trim_end();
        if head.ends_with("object.get(") {
            let path = rest.trim_start();
            if let Some(path) = path.strip_prefix(',') {
                let path = path.trim_start();
                if let Some(list) = path.strip_prefix('[') {
                    let segments: Vec<&str> = list
                        .split(']')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(str::trim)
                        .collect();
                    return literal_path_ok(&segments);
                }
            }
        }
        false
    })
}

/// `input.` followed by `path`: safe unless it is the context as a whole.
fn named_below(path: &str) -> bool {
    let first: String = path.chars().take_while(|c| is_ident(*c)).collect();
    match first.as_str() {
        "" => false,
        "context" => {
            let after = &path[first.len()..];
            let Some(next) = after.strip_prefix('.') else {
                return false; // input.context whole, or input.context[k]
            };
            next.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        }
        _ => true,
    }
}

/// `object.get(input, [segments])`: safe when the path names one member below the context
/// (its literal segments, in quotes).
fn literal_path_ok(segments: &[&str]) -> bool {
    let literal = |s: &str| s.len() >= 2 && s.starts_with('"') && s.ends_with('"');
    match segments {
        [first, ..] if literal(first) && *first != "\"context\"" => true,
        [first, second, ..] => literal(first) && literal(second),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(rego: &str) -> bool {
        clockless(std::iter::once(rego))
    }

    #[test]
    fn named_paths_are_clockless_and_anything_else_is_not() {
        assert!(ok(
            "package a\nd if { input.action.name == \"x\" }\n# the time of day"
        ));
        assert!(ok("d if { input.context.body.email.domains[_] == \"x\" }"));
        assert!(ok("d := object.get(input, [\"action\", \"name\"], \"?\")"));
        assert!(ok("d := object.get(input, [\"context\", \"body\"], {})"));
        assert!(ok("d if { data.inputs.x; my_input := 1 }"));
        assert!(!ok("d if { input.context.time > \"2026\" }"));
        assert!(!ok("d if { t := input.context[\"time\"] }"));
        assert!(!ok("d if { x := \"time\" }"));
        assert!(!ok("d if { some k, v in input.context }"));
        assert!(!ok("d if { c := input.context; c.time }"));
        assert!(!ok("d if { input[k] }"));
        assert!(!ok("d if { walk(input, x) }"));
        assert!(!ok("import input.context as ctx"));
        assert!(!ok("d := object.get(input, [\"context\", k], 1)"));
        assert!(!ok("d := object.get(input, p, 1)"));
        assert!(!ok("d := time.now_ns()"));
        assert!(!ok(
            "d := object.get(input, [\"context\", \"t\\u0069me\"], 1)"
        ));
    }

    #[test]
    fn the_default_policy_is_clockless() {
        let sources = crate::policy::default_sources();
        assert!(clockless(sources.rego.iter().map(|(_, t)| t.as_str())));
    }
}
