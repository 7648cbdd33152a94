//! Reading admin requests: bounded JSON bodies, query parameters and the bearer token.

use axum::extract::Request;
use http::header;

use super::reply::{Reply, bad_request, bad_request_code};

/// Largest JSON body an admin route reads.
pub(crate) const MAX_ADMIN_BODY: usize = 1 << 20;

/// Reads a JSON request body up to [`MAX_ADMIN_BODY`]; refusals come back as responses.
pub(crate) async fn read_json_body(req: Request) -> Result<bytes::Bytes, Reply> {
    use http_body_util::BodyExt;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let media = v.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("application/json")
        });
    let mut body = req.into_body();
    if !is_json {
        // Read (bounded) what the client sends, so its kept-alive connection stays usable
        // for its next request instead of being closed under it.
        let drain = async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > MAX_ADMIN_BODY {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        return Err(bad_request(
            "send the body as Content-Type: application/json",
        ));
    }
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad_request(&format!("reading the body failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > MAX_ADMIN_BODY {
            // Read (bounded) what the client is still sending, so it gets the answer
            // rather than a reset connection.
            let drain = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
            return Err(bad_request_code(
                "body_too_large",
                "admin request bodies are limited to 1 MiB",
            ));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Parses an optional JSON body: none (no length, no chunks) is `T::default()`.
pub(crate) async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: Request,
    expected: &str,
) -> Result<T, Reply> {
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return Ok(T::default());
    }
    parse_json(req, expected).await
}

/// Reads and parses a JSON body; `expected` describes the shape for the 400 reason.
pub(crate) async fn parse_json<T: serde::de::DeserializeOwned>(
    req: Request,
    expected: &str,
) -> Result<T, Reply> {
    let body = read_json_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| bad_request(&format!("expected {expected}: {e}")))
}

/// The form-decoded value of query parameter `name`, if present.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    // Form-decoded: the CLI encodes subjects (`set cred_… github` arrives as `set+cred_…+github`).
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned())
}
