//! Header hygiene shared by both directions: hop-by-hop removal and loop detection.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the de-facto `proxy-connection` and `keep-alive`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and every header named in `Connection`.
///
/// With `upgrade`, the `Upgrade` header survives and `Connection: upgrade` is set again, which
/// is how a WebSocket handshake passes a proxy. `TE: trailers` survives (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Collect names listed in Connection first: they are removed whatever they are.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let kept_upgrade = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if let Some(proto) = kept_upgrade {
        headers.insert(header::UPGRADE, proto);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Headers left out of [`forwarded_digest`]: AgentGate sets or replaces them (`Host`,
/// credentials, `Via`), or the connection decides them (framing, hop-by-hop).
const NOT_DIGESTED: [HeaderName; 10] = [
    header::HOST,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::VIA,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
];

/// SHA-256 of the end-to-end headers a request forwards, in a canonical form others can
/// recompute (docs/audit-format.md): names lowercase, sorted by name (values of one name in
/// order), each name and value prefixed by its length as a big-endian u64. With
/// `injected`, `Accept-Encoding` is left out too: the token gate replaces it.
pub fn forwarded_digest(headers: &HeaderMap, injected: bool) -> [u8; 32] {
    let mut entries: Vec<(&HeaderName, &HeaderValue)> = headers
        .iter()
        .filter(|(name, _)| {
            let replaced = injected && *name == header::ACCEPT_ENCODING;
            !replaced && !NOT_DIGESTED.contains(name)
        })
        .collect();
    // Stable: the values of one name keep their order.
    entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (name, value) in entries {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Whether a request asks for a protocol upgrade (WebSocket) on HTTP/1.1.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether any `Via` entry carries our instance token, i.e. the request came back to us.
pub fn has_looped(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| entry.split_whitespace().nth(1) == Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn keeps_upgrade_and_te_trailers() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn forwarded_digest_is_canonical_and_covers_every_end_to_end_header() {
        let a = map(&[
            ("content-type", "multipart/related; boundary=A"),
            ("x-one", "1"),
            ("x-one", "2"),
            ("authorization", "Bearer agent"),
            ("accept-encoding", "gzip"),
        ]);
        // Other name order, other credentials and framing: the same request leaves.
        let b = map(&[
            ("x-one", "1"),
            ("content-length", "10"),
            ("content-type", "multipart/related; boundary=A"),
            ("x-one", "2"),
            ("host", "elsewhere"),
            ("accept-encoding", "gzip"),
        ]);
        assert_eq!(forwarded_digest(&a, false), forwarded_digest(&b, false));
        // A boundary, a value order, an extra header: another request.
        for other in [
            map(&[
                ("content-type", "multipart/related; boundary=B"),
                ("x-one", "1"),
                ("x-one", "2"),
                ("accept-encoding", "gzip"),
            ]),
            map(&[
                ("content-type", "multipart/related; boundary=A"),
                ("x-one", "2"),
                ("x-one", "1"),
                ("accept-encoding", "gzip"),
            ]),
            map(&[
                ("content-type", "multipart/related; boundary=A"),
                ("x-one", "1"),
                ("x-one", "2"),
                ("accept-encoding", "gzip"),
                ("x-two", ""),
            ]),
        ] {
            assert_ne!(forwarded_digest(&a, false), forwarded_digest(&other, false));
        }
        // Accept-Encoding counts unless the token gate replaces it.
        let c = map(&[
            ("content-type", "multipart/related; boundary=A"),
            ("x-one", "1"),
            ("x-one", "2"),
        ]);
        assert_ne!(forwarded_digest(&a, false), forwarded_digest(&c, false));
        assert_eq!(forwarded_digest(&a, true), forwarded_digest(&c, true));
    }

    #[test]
    fn detects_loops() {
        let h = map(&[("via", "1.1 squid, 1.1 agentgate-abc")]);
        assert!(has_looped(&h, "agentgate-abc"));
        assert!(!has_looped(&h, "agentgate-xyz"));
    }
}
