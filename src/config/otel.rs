//! `[otel]`: exporting the committed audit trail over OTLP (logs, and optionally one span
//! per request). A leaf: it imports nothing from the crate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318): `<endpoint>/v1/logs`, `/v1/traces`.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `[otel]`; off while `endpoint` is empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    /// The collector, e.g. "http://otel-collector:4317" (https:// for TLS).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Also export one span per request, with the gates as its events.
    pub spans: bool,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// More resource attributes, e.g. `{ "deployment.environment" = "prod" }`.
    pub resource: BTreeMap<String, String>,
    /// Request headers (gRPC metadata) that are not secret.
    pub headers: BTreeMap<String, String>,
    /// A file of `Name: value` lines sent as headers too, for secrets (an API key): they
    /// are never logged.
    pub headers_file: Option<PathBuf>,
    /// Extra PEM roots for an https:// collector (the system's are trusted too).
    pub tls_ca: Option<PathBuf>,
    /// Records per export call.
    pub batch: usize,
    /// How long one export call may take before it counts as failed and is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest wait between retries of a failed export (it doubles from 200 ms).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: OtlpProtocol::Grpc,
            spans: false,
            service_name: "agentgate".into(),
            resource: BTreeMap::new(),
            headers: BTreeMap::new(),
            headers_file: None,
            tls_ca: None,
            batch: 512,
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl OtelConfig {
    /// Whether the audit trail is exported.
    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }

    /// Checks what types cannot: `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled() {
            return Ok(());
        }
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err((
                "otel.endpoint",
                format!(
                    "`{}` must start with http:// or https://, e.g. \"http://otel-collector:4317\"",
                    self.endpoint
                ),
            ));
        }
        if self.service_name.is_empty() {
            return Err(("otel.service_name", "must not be empty".into()));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(("otel.batch", "must be 1 to 10000".into()));
        }
        if self.timeout.is_zero() || self.max_backoff < Duration::from_millis(200) {
            return Err((
                "otel.timeout",
                "timeout must be greater than zero and max_backoff at least 200ms".into(),
            ));
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(("otel.headers", format!("`{name}` is not a header name")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn with(endpoint: &str) -> OtelConfig {
        OtelConfig {
            endpoint: endpoint.into(),
            ..OtelConfig::default()
        }
    }

    #[test]
    fn off_by_default_and_only_http_endpoints() {
        assert!(!OtelConfig::default().enabled());
        assert!(OtelConfig::default().validate().is_ok());
        assert!(with("http://collector:4317").validate().is_ok());
        assert!(with("https://collector:4317").validate().is_ok());
        let (key, msg) = with("collector:4317").validate().unwrap_err();
        assert_eq!(key, "otel.endpoint");
        assert!(msg.contains("http://"), "{msg}");
        let mut c = with("http://c:4317");
        c.batch = 0;
        assert_eq!(c.validate().unwrap_err().0, "otel.batch");
        let mut c = with("http://c:4317");
        c.headers.insert("bad header".into(), "x".into());
        assert_eq!(c.validate().unwrap_err().0, "otel.headers");
    }

    #[test]
    fn protocols_by_their_otlp_names() {
        let c: OtelConfig =
            toml::from_str("endpoint = \"http://c:4318\"\nprotocol = \"http/protobuf\"").unwrap();
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        assert!(toml::from_str::<OtelConfig>("protocol = \"http/json\"").is_err());
    }
}
