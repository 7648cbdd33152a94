//! Building admin answers: the JSON error shape every route uses, ready refusals, JSON
//! bodies, and running blocking work with its failure as a `500`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{self, Scope};

/// An admin route's answer.
pub type Reply = Response;

/// Every error: a code and what to do.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `unauthorized`.
    pub error: String,
    /// What went wrong and what to do.
    pub reason: String,
}

/// A 400 with its reason.
pub(crate) fn bad_request(reason: &str) -> Reply {
    bad_request_code("bad_request", reason)
}

/// A 400 with a specific code.
pub(crate) fn bad_request_code(code: &str, reason: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, code, reason)
}

/// A 403 for a route or object outside the caller's scope.
pub(crate) fn forbidden(reason: &str) -> Reply {
    error(StatusCode::FORBIDDEN, "forbidden", reason)
}

/// 403 unless the caller is the instance admin.
pub(crate) fn instance_only(scope: &Scope) -> Result<(), Reply> {
    match scope {
        Scope::Instance => Ok(()),
        Scope::Tenant(_) => Err(forbidden(
            "this route is for the instance admin token; a tenant token cannot use it",
        )),
    }
}

/// A JSON error answer: `{"error": code, "reason": reason}`.
pub(crate) fn error(status: StatusCode, code: &str, reason: &str) -> Reply {
    let body = serde_json::json!({"error": code, "reason": reason});
    json_bytes(status, body.to_string().into())
}

/// A 500 for a failed blocking task or store, with the reason (never a secret).
pub(crate) fn internal(code: &str, reason: &str) -> Reply {
    error(StatusCode::INTERNAL_SERVER_ERROR, code, reason)
}

/// 401 with a `WWW-Authenticate: Bearer` challenge.
pub(crate) fn unauthorized(reason: &str) -> Reply {
    let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", reason);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// A JSON answer from a serializable value.
pub(crate) fn json_value(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body.into()),
        Err(e) => internal("encode_failed", &e.to_string()),
    }
}

/// A JSON answer from ready bytes.
pub(crate) fn json_bytes(status: StatusCode, body: bytes::Bytes) -> Reply {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Runs blocking work (SQLite, policy evaluation) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    code: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Reply> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| internal(code, "the task failed; see the proxy log"))
}

impl IntoResponse for auth::Full {
    fn into_response(self) -> Response {
        error(StatusCode::TOO_MANY_REQUESTS, "too_many", &self.to_string())
    }
}

/// The event-stream answer for what `rx` brings, with a keep-alive comment every 15 s.
pub(crate) fn sse_reply(
    rx: tokio::sync::mpsc::Receiver<Result<axum::response::sse::Event, std::convert::Infallible>>,
) -> Reply {
    use axum::response::sse::{KeepAlive, Sse};
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(
            KeepAlive::new()
                .interval(std::time::Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response()
}
