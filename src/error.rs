//! Refusals and their one HTTP form.
//!
//! Every place that refuses a request returns a [`Denial`]; only [`Denial::into_response`]
//! turns it into HTTP: status, JSON body `{"error","gate","reason","request_id"}` and the
//! `X-AgentGate-Denied-By` header. Keeping this in one place keeps every refusal alike.

use std::borrow::Cow;
use std::fmt;

use http::{HeaderValue, Response, StatusCode, header};

/// Response header naming the gate that refused a request.
pub const DENIED_BY: &str = "x-agentgate-denied-by";
/// Response header carrying the request id (on every response).
pub const REQUEST_ID: &str = "x-agentgate-request-id";
/// The challenge sent with every `407`: clients answer it with the credentials in their
/// proxy URL.
pub const PROXY_CHALLENGE: &str = "Basic realm=\"agentgate\"";

/// The stage of the flow that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Parsing and checking what the agent sent (request form, tunnel agreement, loops).
    Ingress,
    /// Gate 1: who is calling (JWT-SVID in Proxy-Authorization).
    Identity,
    /// Gate 2: what the request means (its AuthZEN tuple).
    Intent,
    /// Gate 3: whether policy allows it.
    Policy,
    /// Gate 4: a human's approval, when policy escalates.
    Consent,
    /// Gate 5: the credential injected for the request.
    Token,
    /// The audit log: a request whose decision cannot be committed is not forwarded.
    Audit,
    /// Egress guard: destination port and address rules.
    Guard,
    /// Configured bounds (sizes, connection counts).
    Limits,
    /// Reaching the upstream server.
    Upstream,
}

impl Gate {
    /// The gate's name as it appears in responses and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Ingress => "ingress",
            Gate::Identity => "identity",
            Gate::Intent => "intent",
            Gate::Policy => "policy",
            Gate::Consent => "consent",
            Gate::Token => "token",
            Gate::Audit => "audit",
            Gate::Guard => "guard",
            Gate::Limits => "limits",
            Gate::Upstream => "upstream",
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: which gate, what status, a stable error code and a human reason.
#[derive(Debug, Clone)]
pub struct Denial {
    pub gate: Gate,
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `port_not_allowed`.
    pub error: &'static str,
    /// What went wrong and, where it helps, what to do.
    pub reason: Cow<'static, str>,
    /// More for the agent: fields added to the JSON body, and a `Retry-After` (seconds).
    pub extra: Option<std::sync::Arc<Extra>>,
}

/// Fields a denial adds to its body (a pending consent's id and code), and when to retry.
#[derive(Debug)]
pub struct Extra {
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub retry_after: Option<u64>,
}

impl Denial {
    /// A denial with the given parts.
    pub fn new(
        gate: Gate,
        status: StatusCode,
        error: &'static str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Denial {
            gate,
            status,
            error,
            reason: reason.into(),
            extra: None,
        }
    }

    /// The same denial with more fields in its body and a `Retry-After`.
    pub fn with_extra(
        mut self,
        fields: serde_json::Map<String, serde_json::Value>,
        retry_after: Option<u64>,
    ) -> Self {
        self.extra = Some(std::sync::Arc::new(Extra {
            fields,
            retry_after,
        }));
        self
    }

    /// The JSON body for this denial.
    pub fn body(&self, request_id: &str) -> String {
        let mut body = serde_json::json!({
            "error": self.error,
            "gate": self.gate.as_str(),
            "reason": self.reason,
            "request_id": request_id,
        });
        if let (Some(extra), Some(obj)) = (&self.extra, body.as_object_mut()) {
            for (k, v) in &extra.fields {
                obj.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        body.to_string()
    }

    /// The body for a refused MCP request: a JSON-RPC error answering `id`, with the
    /// usual JSON body as its `data`.
    pub fn jsonrpc_body(&self, request_id: &str, id: &serde_json::Value) -> String {
        let data: serde_json::Value =
            serde_json::from_str(&self.body(request_id)).unwrap_or_default();
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                // JSON-RPC's range for errors a server defines.
                "code": -32000,
                "message": format!("refused by AgentGate ({}): {}", self.error, self.reason),
                "data": data,
            },
        })
        .to_string()
    }

    /// The HTTP response for this denial (any body type that can hold its JSON text).
    pub fn into_response<B: From<String>>(self, request_id: &str) -> Response<B> {
        let mut resp = Response::new(B::from(self.body(request_id)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(DENIED_BY, HeaderValue::from_static(self.gate.as_str()));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID, v);
        }
        if let Some(secs) = self.extra.as_ref().and_then(|e| e.retry_after) {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            h.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static(PROXY_CHALLENGE),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status.as_u16() == 421 {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// The whole response as raw HTTP/1.1 bytes, for places that have no hyper connection
    /// (connection limit, plaintext sent where TLS was expected).
    pub fn to_http1_bytes(&self, request_id: &str) -> Vec<u8> {
        let body = self.body(request_id);
        let challenge = if self.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            format!("proxy-authenticate: {PROXY_CHALLENGE}\r\n")
        } else {
            String::new()
        };
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n{DENIED_BY}: {}\r\n{REQUEST_ID}: {request_id}\r\n{challenge}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.gate.as_str(),
            body.len()
        )
        .into_bytes()
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.error, self.gate, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_json_and_headers() {
        let d = Denial::new(Gate::Guard, StatusCode::FORBIDDEN, "port_not_allowed", "no");
        let resp: Response<String> = d.clone().into_response("abc-1");
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[DENIED_BY], "guard");
        assert_eq!(resp.headers()[REQUEST_ID], "abc-1");
        let v: serde_json::Value = serde_json::from_str(&d.body("abc-1")).unwrap();
        assert_eq!(v["error"], "port_not_allowed");
        assert_eq!(v["gate"], "guard");
        assert_eq!(v["reason"], "no");
        assert_eq!(v["request_id"], "abc-1");
        let raw = String::from_utf8(d.to_http1_bytes("abc-1")).unwrap();
        assert!(raw.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(raw.ends_with(&d.body("abc-1")));
    }
}
