//! One query parameter, read so that no two front ends can disagree on its value.

use super::error::{BodyError, ambiguous, shown};

/// The value of query parameter `name` when the query gives it once, spelt exactly;
/// `Ok(None)` when absent. Refused when given twice, or under a name that differs only in
/// case, separators (`_ - .`), spaces or a `$` prefix: which one a vendor's front end reads
/// is not documented.
pub fn query_once(query: Option<&str>, name: &str) -> Result<Option<String>, BodyError> {
    let loose = |k: &str| -> String {
        k.chars()
            .filter(|c| {
                !matches!(c, '_' | '-' | '.' | '$') && !c.is_whitespace() && !c.is_control()
            })
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let wanted = loose(name);
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if loose(&k) != wanted {
            continue;
        }
        if k != name {
            return Err(ambiguous(format!(
                "the query names {name} as {}; send it exactly as {name}",
                shown(&k)
            )));
        }
        if found.is_some() {
            return Err(ambiguous(format!(
                "the query gives {name} more than once; send it once"
            )));
        }
        found = Some(v.into_owned());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_parameter_counts_once_in_any_spelling() {
        let q = |s| query_once(Some(s), "service");
        assert_eq!(
            q("service=git-upload-pack"),
            Ok(Some("git-upload-pack".into()))
        );
        assert_eq!(
            q("a=1&service=git%2Dupload-pack"),
            Ok(Some("git-upload-pack".into()))
        );
        assert_eq!(query_once(None, "service"), Ok(None));
        assert_eq!(q("services=x"), Ok(None));
        for repeated in [
            "service=a&service=b",
            "service=a&Service=b",
            "service=a&+service=b",
            "SERVICE=a",
        ] {
            assert!(q(repeated).is_err(), "{repeated}");
        }
        // `;` is no separator here: the whole rest is one (unknown) value.
        assert_eq!(
            q("service=git-upload-pack;service=git-receive-pack"),
            Ok(Some("git-upload-pack;service=git-receive-pack".into()))
        );
    }
}
