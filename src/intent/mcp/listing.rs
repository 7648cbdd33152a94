//! Reads a `tools/list` answer as it streams to the agent (JSON, or a Server-Sent Events
//! stream of JSON-RPC messages), bounded, and hands its tools to the pins once it ended
//! whole. A listing larger than 1 MiB is not pinned (and logged); none is ever held up.

use std::sync::Arc;

use serde_json::Value;

use super::pins::Pins;
use crate::audit::Audit;
use crate::audit::record;

/// Bytes of a listing read at most (per answer in flight).
const MAX_LISTING: usize = 1 << 20;

/// The tap on one `tools/list` answer, or on a server's stream (the older HTTP+SSE
/// transport answers there).
#[derive(Debug)]
pub struct Listing {
    pub pins: Arc<Pins>,
    pub audit: Arc<Audit>,
    pub tenant: Option<String>,
    pub server: String,
    buf: Vec<u8>,
    /// `None` until the first byte says: JSON (read whole) or SSE (read event by event).
    sse: Option<bool>,
    /// How far `buf` was searched for an event's end: each byte is looked at once, however
    /// small the pieces a server sends.
    scanned: usize,
    over: bool,
}

impl Listing {
    /// A tap for a listing of `server`'s tools asked by `tenant`'s agent.
    pub fn new(
        pins: Arc<Pins>,
        audit: Arc<Audit>,
        tenant: Option<String>,
        server: String,
    ) -> Listing {
        Listing {
            pins,
            audit,
            tenant,
            server,
            buf: Vec::new(),
            sse: None,
            scanned: 0,
            over: false,
        }
    }

    /// Pins the tools of one JSON text (an answer, or one event's data).
    fn take(&self, tools: Vec<Value>) {
        if tools.is_empty() {
            return;
        }
        let seen = self
            .pins
            .observe(self.tenant.as_deref(), &self.server, &tools);
        for (event, names) in [
            ("mcp_tools_pinned", &seen.pinned),
            ("mcp_tool_changed", &seen.changed),
        ] {
            if names.is_empty() {
                continue;
            }
            if event == "mcp_tool_changed" {
                tracing::warn!(server = %self.server, tools = ?names, "an MCP server changed pinned tools; calls to them now need `agentgate mcp accept`");
            }
            self.audit.submit(
                record::Admin {
                    event: event.into(),
                    tenant: self.tenant.clone(),
                    detail: record::Detail::Other(serde_json::json!({
                        "server": self.server,
                        "tools": names,
                    })),
                }
                .into(),
            );
        }
    }

    /// Takes every complete event out of the buffer.
    fn events(&mut self) {
        // A blank line may straddle the last search's end: look back 3 bytes.
        let from = self.scanned.saturating_sub(3);
        let Some((end, skip)) = event_end(&self.buf[from..]) else {
            self.scanned = self.buf.len();
            return;
        };
        let mut end = from + end;
        let mut skip = skip;
        loop {
            let event: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
            self.take(tools_of(&event));
            match event_end(&self.buf) {
                Some((e, s)) => (end, skip) = (e, s),
                None => break,
            }
        }
        self.scanned = self.buf.len();
    }
}

/// Where the first event of `buf` ends, and the length of the blank line that ends it.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

impl crate::body::Tap for Listing {
    fn feed(&mut self, data: &[u8]) {
        if self.over {
            return;
        }
        if self.buf.len() + data.len() > MAX_LISTING {
            self.over = true;
            self.buf = Vec::new();
            tracing::warn!(server = %self.server, "an MCP answer or event larger than 1 MiB was not read for pins");
            return;
        }
        self.buf.extend_from_slice(data);
        if self.sse.is_none() {
            self.sse = self
                .buf
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .map(|b| *b != b'{' && *b != b'[');
        }
        if self.sse == Some(true) {
            self.events();
        }
    }

    fn done(self: Box<Self>, whole: bool) {
        if self.over || !whole {
            return;
        }
        // JSON: the whole answer; SSE: an event the stream ended without a blank line after.
        self.take(tools_of(&self.buf));
    }
}

/// The tools of every JSON-RPC result in `body` (one JSON message, or an SSE stream).
fn tools_of(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    let messages: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Array(list)) => list,
            Ok(v) => vec![v],
            Err(_) => Vec::new(),
        }
    } else {
        sse_data(&text)
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    };
    messages
        .iter()
        .filter_map(|m| m.get("result")?.get("tools")?.as_array())
        .flatten()
        .cloned()
        .collect()
}

/// The `data` of each event of a Server-Sent Events stream (multi-line data joined).
fn sse_data(text: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            events.extend(data.take());
        } else if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => data = Some(rest.to_owned()),
            }
        }
    }
    events.extend(data);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_come_from_json_and_from_sse() {
        let json = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}"#;
        assert_eq!(tools_of(json).len(), 2);
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\r\ndata: \"result\":{\"tools\":[{\"name\":\"c\"}]}}\r\n\r\n";
        let tools = tools_of(sse);
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0]["name"], "c");
        assert!(tools_of(b"not json").is_empty());
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use crate::body::Tap;

    /// A stream's listing is pinned when its event is complete, split however it arrives,
    /// without waiting for the stream to end.
    #[test]
    fn a_streamed_listing_is_pinned_event_by_event() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::StateDir::open_or_create(dir.path().join("home")).unwrap();
        let audit =
            Arc::new(Audit::open(&Default::default(), &state, "test", Default::default()).unwrap());
        let pins = Arc::new(Pins::in_memory());
        let mut tap = Listing::new(pins.clone(), audit, None, "github".into());
        let event = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"list_issues\"}]}}\r\n\r\n";
        let (a, b) = event.split_at(30);
        tap.feed(b"event: endpoint\ndata: /messages?sessionId=1\n\n");
        tap.feed(a);
        assert_eq!(pins.context(None, "github", "list_issues")["listed"], false);
        tap.feed(b);
        assert_eq!(pins.context(None, "github", "list_issues")["listed"], true);
    }
}
