//! Host and authority text: splitting `host:port`, normalizing a host. Used by ingress
//! (CONNECT targets, `Host`), the egress guard and the vault (connection origins). A leaf.

use std::net::IpAddr;

/// Splits an authority into host and optional port (IPv6 in brackets).
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let host = &authority[..=end];
        let rest = &authority[end + 1..];
        return match rest.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((authority, None)),
    }
}

/// Splits `host:port` (with `[v6]:port` for IPv6); `None` if either part is missing or bad.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

/// Lowercases a host and checks it is a DNS name or an IP literal (brackets removed).
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.parse::<IpAddr>().is_ok() {
        return Some(host.to_ascii_lowercase());
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_authorities() {
        assert_eq!(split_authority("a.com"), Some(("a.com", None)));
        assert_eq!(split_authority("a.com:8443"), Some(("a.com", Some(8443))));
        assert_eq!(split_authority("[::1]:443"), Some(("[::1]", Some(443))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_authority("a.com:x"), None);
    }

    #[test]
    fn parses_hosts() {
        assert_eq!(split_host_port("a.com:443"), Some(("a.com", 443)));
        assert_eq!(split_host_port("[::1]:8443"), Some(("::1", 8443)));
        assert_eq!(split_host_port("a.com"), None);
        assert_eq!(split_host_port("a.com:0"), None);
        assert_eq!(
            normalize_host("API.GitHub.com."),
            Some("api.github.com".into())
        );
        assert_eq!(normalize_host("[::1]"), Some("::1".into()));
        assert_eq!(normalize_host("bad host"), None);
        assert_eq!(normalize_host("a..b"), None);
    }
}
