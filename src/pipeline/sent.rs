//! What a forwarded request sends upstream, as its decision record says (`sent`).

use crate::audit::record;

/// What a forwarded request sends upstream, as its decision record says (`sent`), so the
/// record can be held against what the upstream received.
pub(super) struct Sent {
    method: http::Method,
    target_sha256: [u8; 32],
    headers_sha256: [u8; 32],
    headers: serde_json::Map<String, serde_json::Value>,
    body_sha256: Option<[u8; 32]>,
    body_bytes: Option<usize>,
}

impl Sent {
    /// `injected`: the token gate adds a credential (and replaces `Accept-Encoding`);
    /// `body`: the whole body's digest and length, when it was read before deciding.
    pub(super) fn new(
        parts: &http::request::Parts,
        injected: bool,
        body_sha256: Option<[u8; 32]>,
        read: Option<usize>,
    ) -> Sent {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        Sent {
            method: parts.method.clone(),
            target_sha256: crate::digest::sha256(target.as_bytes()),
            headers_sha256: crate::headers::forwarded_digest(&parts.headers, injected),
            headers: crate::intent::meaning_headers(&parts.headers),
            body_bytes: body_sha256.map(|_| read.unwrap_or(0)),
            body_sha256,
        }
    }

    pub(super) fn to_record(&self) -> record::Sent {
        record::Sent {
            body_bytes: self.body_bytes.map(|n| n as u64),
            body_sha256: self.body_sha256.map(record::Sha256),
            headers: self.headers.clone(),
            headers_sha256: record::Sha256(self.headers_sha256),
            method: self.method.as_str().to_owned(),
            target_sha256: record::Sha256(self.target_sha256),
        }
    }
}
