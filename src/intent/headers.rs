//! The request headers intent judges: method overrides are refused, headers that change
//! what a body means must be single (and are recorded in the tuple), and a body intent
//! reads must be plain UTF-8.

use http::HeaderMap;
use http::header::{self, HeaderName};
use serde_json::{Map, Value};

use super::error::IntentError;
use crate::vendors;

/// Request headers that ask the server to act as another method (Google's APIs honour
/// them). A request that carries one means two things at once, so it is refused: nothing
/// in the catalog needs them, and judging one method while the vendor acts on another is
/// exactly the bypass a gate exists to stop.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that change what a request body means at the vendor: one value each, or the
/// request is refused as ambiguous (a second parser may read the other one). Vendors add
/// their own (`Vendor::meaning_headers`).
static MEANING_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_RANGE,
    header::CONTENT_DISPOSITION,
];

/// Every meaning header: HTTP's, then each vendor's.
fn meaning_names() -> impl Iterator<Item = &'static HeaderName> {
    MEANING_HEADERS.iter().chain(vendors::meaning_headers())
}

/// Refuses a method override, and a meaning header given more than once.
pub(super) fn check(headers: &HeaderMap) -> Result<(), IntentError> {
    if let Some(name) = METHOD_OVERRIDES
        .into_iter()
        .find(|name| headers.contains_key(*name))
    {
        return Err(IntentError::MethodOverride(name));
    }
    for name in meaning_names() {
        let mut values = headers.get_all(name).iter();
        if values.next().is_some() && values.next().is_some() {
            return Err(IntentError::Ambiguous(format!(
                "the request has more than one {name} header; send one"
            )));
        }
    }
    Ok(())
}

/// For a body intent reads: it must be read as the vendor reads it, so no content coding
/// (the bytes judged would not be the bytes meant) and no character set but UTF-8.
pub(super) fn body_headers(headers: &HeaderMap) -> Result<(), IntentError> {
    if let Some(coding) = headers.get(header::CONTENT_ENCODING) {
        if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(IntentError::Ambiguous(
                "this operation's body is inspected, and a Content-Encoding body cannot be; send it uncompressed".into(),
            ));
        }
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct
        .to_str()
        .map_err(|_| IntentError::Ambiguous("the Content-Type header is not ASCII".into()))?;
    for param in ct.split(';').skip(1) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !value.eq_ignore_ascii_case("utf-8") && !value.eq_ignore_ascii_case("us-ascii") {
                return Err(IntentError::Ambiguous(format!(
                    "this operation's body is inspected as UTF-8, and its Content-Type names charset {value}"
                )));
            }
        }
    }
    Ok(())
}

/// The meaning headers a request carries (`Content-Type` and the like, and each vendor's),
/// by lowercase name (for the tuple and the decision record's `sent`).
pub fn meaning_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in meaning_names() {
        if let Some(v) = headers.get(name) {
            out.insert(
                name.as_str().into(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            );
        }
    }
    out
}

/// A header's value, when it is text.
pub(super) fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
