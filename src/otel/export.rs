//! The OTLP exporters (the `opentelemetry-otlp` crate's, over gRPC or HTTP/protobuf), one
//! pair per tenant so that each batch carries its tenant as a resource attribute. HTTP goes
//! through AgentGate's own client (its roots, no proxy, no redirects).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{
    LogExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::LogExporter as _;
use opentelemetry_sdk::trace::SpanExporter as _;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{OtelConfig, OtlpProtocol};
use crate::egress::upstream::Upstream;

/// Why the exporters cannot be built: a configuration the user must mend.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("otel.headers_file {path}: {reason}")]
    Headers { path: String, reason: String },
    #[error("otel.tls_ca {path}: {reason}")]
    Roots { path: String, reason: String },
    #[error("otel: cannot build the OTLP exporter for {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
    #[error("otel: cannot build the HTTP client: {0}")]
    Client(String),
}

/// One tenant's exporters.
pub struct Pair {
    pub logs: LogExporter,
    pub spans: Option<SpanExporter>,
}

/// Builds a log or span exporter (their builders share methods, not a trait) for the
/// configured transport; `$path` is the signal's OTLP/HTTP path.
macro_rules! exporter {
    ($self:ident, $kind:ident, $path:literal) => {{
        let built = match &$self.http {
            Some(client) => $kind::builder()
                .with_http()
                .with_endpoint($self.url($path))
                .with_protocol(Protocol::HttpBinary)
                .with_timeout($self.config.timeout)
                .with_headers($self.headers.clone().into_iter().collect())
                .with_http_client(client.clone())
                .build(),
            None => {
                let b = $kind::builder()
                    .with_tonic()
                    .with_endpoint($self.config.endpoint.clone())
                    .with_timeout($self.config.timeout)
                    .with_metadata($self.metadata()?);
                match &$self.tls {
                    Some(tls) => b.with_tls_config(tls.clone()).build(),
                    None => b.build(),
                }
            }
        };
        built.map_err(|e| $self.build_err(e.to_string()))
    }};
}

/// The exporters, built on first use per tenant.
pub struct Exporters {
    config: OtelConfig,
    /// Resource attributes every batch carries (service, instance, fleet, the user's).
    base: Vec<KeyValue>,
    headers: BTreeMap<String, String>,
    http: Option<Client>,
    tls: Option<ClientTlsConfig>,
    by_tenant: HashMap<Option<String>, Pair>,
}

impl Exporters {
    /// Checks the configuration, reads its files and builds the instance's exporters (a
    /// tenant's are built on first use). Call it on the runtime: gRPC channels need one.
    pub fn new(
        config: &OtelConfig,
        instance: &str,
        fleet: Option<&str>,
        upstream: &Upstream,
    ) -> Result<Exporters, OtelError> {
        let mut headers = config.headers.clone();
        if let Some(path) = &config.headers_file {
            // Secret headers travel only over TLS (or to loopback).
            crate::outbound::check_endpoint(&config.endpoint).map_err(|reason| {
                OtelError::Headers {
                    path: path.display().to_string(),
                    reason: format!("secret headers go only to an https:// endpoint: {reason}"),
                }
            })?;
            headers.extend(read_headers(path)?);
        }
        let mut base = vec![
            KeyValue::new("service.name", config.service_name.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_owned()),
        ];
        if let Some(fleet) = fleet {
            base.push(KeyValue::new("agentgate.fleet", fleet.to_owned()));
        }
        base.extend(
            config
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
        let (extra_roots, extra_pem) = match &config.tls_ca {
            Some(path) => read_roots(path)?,
            None => (Vec::new(), Vec::new()),
        };
        let (http, tls) = match config.protocol {
            OtlpProtocol::HttpProtobuf => {
                let tls = upstream
                    .client_config_adding(&extra_roots)
                    .map_err(|e| OtelError::Client(e.to_string()))?;
                let client = crate::outbound::http_client(tls, config.timeout)
                    .build()
                    .map_err(|e| OtelError::Client(e.to_string()))?;
                (Some(Client(client)), None)
            }
            OtlpProtocol::Grpc if config.endpoint.starts_with("https://") => {
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if !extra_pem.is_empty() {
                    tls = tls.ca_certificate(Certificate::from_pem(extra_pem));
                }
                (None, Some(tls))
            }
            OtlpProtocol::Grpc => (None, None),
        };
        let mut exporters = Exporters {
            config: config.clone(),
            base,
            headers,
            http,
            tls,
            by_tenant: HashMap::new(),
        };
        // Built now, so an endpoint the exporter cannot use stops the start, not every export.
        exporters.for_tenant(None)?;
        Ok(exporters)
    }

    /// The exporters for `tenant`'s records, built on first use.
    pub fn for_tenant(&mut self, tenant: Option<&str>) -> Result<&Pair, OtelError> {
        let key = tenant.map(str::to_owned);
        if !self.by_tenant.contains_key(&key) {
            let mut resource = Resource::builder_empty().with_attributes(self.base.clone());
            if let Some(t) = tenant {
                resource = resource.with_attribute(KeyValue::new("agentgate.tenant", t.to_owned()));
            }
            let resource = resource.build();
            let mut logs = self.log_exporter()?;
            logs.set_resource(&resource);
            let spans = match self.config.spans {
                true => {
                    let mut spans = self.span_exporter()?;
                    spans.set_resource(&resource);
                    Some(spans)
                }
                false => None,
            };
            self.by_tenant.insert(key.clone(), Pair { logs, spans });
        }
        self.by_tenant
            .get(&key)
            .ok_or_else(|| self.build_err("exporter missing".into()))
    }

    fn build_err(&self, reason: String) -> OtelError {
        OtelError::Build {
            endpoint: self.config.endpoint.clone(),
            reason,
        }
    }

    fn log_exporter(&self) -> Result<LogExporter, OtelError> {
        exporter!(self, LogExporter, "/v1/logs")
    }

    fn span_exporter(&self) -> Result<SpanExporter, OtelError> {
        exporter!(self, SpanExporter, "/v1/traces")
    }

    /// `endpoint` + the signal's path, as OTLP/HTTP's base-URL rule has it.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.endpoint.trim_end_matches('/'))
    }

    fn metadata(&self) -> Result<MetadataMap, OtelError> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| self.build_err(format!("header {name}: {e}")))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| self.build_err(format!("header {name}: not a valid value")))?;
            headers.insert(name, value);
        }
        Ok(MetadataMap::from_headers(headers))
    }
}

/// `Name: value` lines; `#` comments and blank lines skipped. Values are never echoed.
fn read_headers(path: &std::path::Path) -> Result<BTreeMap<String, String>, OtelError> {
    let err = |reason: String| OtelError::Headers {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(err(format!("line {}: expected `Name: value`", n + 1)));
        };
        let name = name.trim().to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value.trim()).is_err()
        {
            return Err(err(format!("line {}: not a valid header", n + 1)));
        }
        out.insert(name, value.trim().to_owned());
    }
    Ok(out)
}

/// The certificates of `otel.tls_ca`, parsed, and the file as read (tonic takes PEM).
type Roots = (Vec<CertificateDer<'static>>, Vec<u8>);

fn read_roots(path: &std::path::Path) -> Result<Roots, OtelError> {
    let err = |reason: String| OtelError::Roots {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificates in the file".into()));
    }
    Ok((certs, pem))
}

/// AgentGate's reqwest client as OTLP/HTTP's transport.
#[derive(Debug, Clone)]
pub struct Client(reqwest::Client);

impl HttpClient for Client {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = self.0.execute(request).await?;
            let status = response.status();
            // A collector's answer is small; a huge one is cut off, not buffered.
            let body = read_limited(response, 1 << 20).await?;
            Ok(Response::builder().status(status).body(body)?)
        })
    }
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Bytes, HttpError> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > limit {
            return Err("the collector's answer is larger than 1 MiB".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// How long to wait for one export call: its own timeout plus a margin for the transport.
pub fn deadline(config: &OtelConfig) -> Duration {
    config.timeout + Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_headers_file_is_read_and_a_bad_line_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        std::fs::write(
            &path,
            "# the collector's key\nX-Api-Key: s3cr3t\n\nx-org: a\n",
        )
        .unwrap();
        let h = read_headers(&path).unwrap();
        assert_eq!(h["x-api-key"], "s3cr3t");
        assert_eq!(h["x-org"], "a");
        std::fs::write(&path, "x-ok: 1\nAuthorization Bearer s3cr3t\n").unwrap();
        let err = read_headers(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
