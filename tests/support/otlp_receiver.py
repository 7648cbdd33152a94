#!/usr/bin/env python3
"""An OpenTelemetry OTLP receiver for the end-to-end tests (stands in for a collector).

    otlp_receiver.py --out /tmp/x/otlp.jsonl [--delay-ms N] [--fail-first N]

Built on the official OTLP messages and services (the `opentelemetry-proto` package's generated
*_pb2 / *_pb2_grpc modules) with grpcio and Python's http.server. Serves on 127.0.0.1, ports
picked by the OS:
  - OTLP/gRPC: opentelemetry.proto.collector.{logs,trace}.v1.{LogsService,TraceService}/Export
    (gzip-compressed messages are handled by grpcio itself);
  - OTLP/HTTP protobuf: POST /v1/logs and POST /v1/traces with Content-Type
    application/x-protobuf, optionally Content-Encoding gzip; answered 200 with an empty
    Export*ServiceResponse (application/x-protobuf). OTLP/JSON is not supported (415);
  - GET /status on the HTTP port: {"grpc_calls", "http_calls", "failed", "bad_requests",
    "records"} (export calls per transport, including the failed ones; calls answered with a
    fault; undecodable HTTP bodies; log records + spans written).

Every accepted log record and span is written to --out (truncated at start) as one JSON line,
flushed before the export is answered (so a test that saw the export succeed finds it in the file):
  {"signal": "log", "transport": "grpc"|"http", "resource": {attrs}, "scope": name,
   "scope_version": str, "time_unix_nano": int, "observed_time_unix_nano": int,
   "severity_text": str, "severity_number": int, "event_name": str, "body": value,
   "attributes": {attrs}, "trace_id": hex, "span_id": hex}
  {"signal": "span", "transport": ..., "resource": ..., "scope": ..., "scope_version": ...,
   "name": str, "trace_id": hex, "span_id": hex, "parent_span_id": hex, "kind": int,
   "start_time_unix_nano": int, "end_time_unix_nano": int, "attributes": {attrs},
   "events": [{"name", "time_unix_nano", "attributes"}], "status": {"code": int, "message": str}}
Attribute values (and log bodies) become plain JSON: string, int, bool, double (non-finite ones
as strings), arrays as lists, kvlists as objects, bytes as hex, unset as null. Ids are lowercase
hex, "" when absent.

Faults, for testing an exporter's timeouts and retries:
  --delay-ms N    every export call waits N ms before it is answered (both transports); one the
                  client gave up on meanwhile is still recorded, as a real collector would
                  (so a retrying exporter may deliver it twice);
  --fail-first N  the first N export calls, counted over BOTH transports together, are answered
                  gRPC UNAVAILABLE / HTTP 503 (retryable in OTLP) and their records are dropped;
                  later calls succeed.

Prints `READY grpc=127.0.0.1:PORT http=127.0.0.1:PORT` once both listen, then serves until
SIGTERM/SIGINT, or until stdin closes when stdin is a pipe (the test harness holds it open; a
terminal or /dev/null does not stop it). A malformed HTTP body is answered 400 and logged to
stderr. Diagnostics go to stderr.
"""

import argparse
import gzip
import json
import math
import os
import signal
import stat
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_svc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_svc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc
except ImportError as e:  # pragma: no cover - environment problem
    print(
        f"otlp_receiver.py: {e}; grpcio and opentelemetry-proto are needed "
        "(scripts/test installs them into target/e2e-venv)",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(3)


def log(msg):
    print(f"otlp_receiver.py: {msg}", file=sys.stderr, flush=True)


# --- OTLP messages -> JSON-able dicts -----------------------------------------------------


def value(v):
    """An AnyValue as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    x = getattr(v, kind)
    # json.dumps would write NaN/Infinity, which is not JSON (serde_json rejects it).
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def flatten_logs(req, transport):
    for rl in req.resource_logs:
        resource = attrs(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                yield {
                    "signal": "log",
                    "transport": transport,
                    "resource": resource,
                    "scope": sl.scope.name,
                    "scope_version": sl.scope.version,
                    "time_unix_nano": r.time_unix_nano,
                    "observed_time_unix_nano": r.observed_time_unix_nano,
                    "severity_text": r.severity_text,
                    "severity_number": r.severity_number,
                    "event_name": r.event_name,
                    "body": value(r.body),
                    "attributes": attrs(r.attributes),
                    "trace_id": r.trace_id.hex(),
                    "span_id": r.span_id.hex(),
                }


def flatten_spans(req, transport):
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "signal": "span",
                    "transport": transport,
                    "resource": resource,
                    "scope": ss.scope.name,
                    "scope_version": ss.scope.version,
                    "name": s.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "kind": s.kind,
                    "start_time_unix_nano": s.start_time_unix_nano,
                    "end_time_unix_nano": s.end_time_unix_nano,
                    "attributes": attrs(s.attributes),
                    "events": [
                        {
                            "name": e.name,
                            "time_unix_nano": e.time_unix_nano,
                            "attributes": attrs(e.attributes),
                        }
                        for e in s.events
                    ],
                    "status": {"code": s.status.code, "message": s.status.message},
                }


# The two signals: request/response types and flattener, by HTTP path.
SIGNALS = {
    "/v1/logs": (
        logs_svc.ExportLogsServiceRequest,
        logs_svc.ExportLogsServiceResponse,
        flatten_logs,
    ),
    "/v1/traces": (
        trace_svc.ExportTraceServiceRequest,
        trace_svc.ExportTraceServiceResponse,
        flatten_spans,
    ),
}


# --- shared state: the output file, counters, faults --------------------------------------


class Receiver:
    def __init__(self, out, delay_ms, fail_first):
        # A fresh file per run. Each export's lines are written and flushed together under the
        # lock, so lines from concurrent gRPC and HTTP exports never interleave.
        self.out = open(out, "w", encoding="utf-8")
        self.delay = delay_ms / 1000.0
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(
            ("grpc_calls", "http_calls", "failed", "bad_requests", "records"), 0
        )

    def bad_request(self):
        with self.lock:
            self.counts["bad_requests"] += 1

    def export(self, transport, req, flatten):
        """One decoded export call: True if accepted (records written), False if it must be
        answered with the retryable fault."""
        with self.lock:
            self.counts[f"{transport}_calls"] += 1
            calls = self.counts["grpc_calls"] + self.counts["http_calls"]
            fail = calls <= self.fail_first
        if self.delay:
            time.sleep(self.delay)
        if fail:
            with self.lock:
                self.counts["failed"] += 1
            log(f"{transport} export call {calls}: failing (--fail-first {self.fail_first})")
            return False
        lines = [json.dumps(r, separators=(",", ":")) + "\n" for r in flatten(req, transport)]
        with self.lock:
            self.out.write("".join(lines))
            self.out.flush()
            self.counts["records"] += len(lines)
        return True

    def status(self):
        with self.lock:
            return dict(self.counts)


# --- OTLP/gRPC ------------------------------------------------------------------------------


class LogsService(logs_grpc.LogsServiceServicer):
    def __init__(self, receiver):
        self.receiver = receiver

    def Export(self, request, context):
        if not self.receiver.export("grpc", request, flatten_logs):
            context.abort(grpc.StatusCode.UNAVAILABLE, "otlp_receiver: failing on purpose")
        return logs_svc.ExportLogsServiceResponse()


class TraceService(trace_grpc.TraceServiceServicer):
    def __init__(self, receiver):
        self.receiver = receiver

    def Export(self, request, context):
        if not self.receiver.export("grpc", request, flatten_spans):
            context.abort(grpc.StatusCode.UNAVAILABLE, "otlp_receiver: failing on purpose")
        return trace_svc.ExportTraceServiceResponse()


# --- OTLP/HTTP ------------------------------------------------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rpc_status(code, message):
    """A google.rpc.Status (code = 1, message = 2), which OTLP/HTTP wants as the body of every
    4xx/5xx; encoded by hand to need no googleapis-common-protos."""
    msg = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as exporters' HTTP clients expect
    receiver = None  # set in main

    def log_message(self, fmt, *args):  # quiet: one stderr line per request would drown tests
        pass

    def reply(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            log(f"{self.command} {self.path}: client went away before the {code} answer")
            self.close_connection = True

    def fail(self, http_code, grpc_code, message):
        self.reply(http_code, rpc_status(grpc_code, message), "application/x-protobuf")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                body += self.rfile.read(size + 2)[:size]  # data, then its CRLF
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, blank line
                pass
            return body
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        if self.path == "/status":
            self.reply(200, json.dumps(self.receiver.status()).encode(), "application/json")
        else:
            self.reply(404, b"not found\n", "text/plain")

    def do_POST(self):
        try:
            body = self.read_body()
        except (ValueError, OSError) as e:
            log(f"POST {self.path}: unreadable body: {e}")
            self.close_connection = True
            self.receiver.bad_request()
            return self.fail(400, 3, f"unreadable body: {e}")
        signal_ = SIGNALS.get(self.path)
        if signal_ is None:
            return self.reply(404, b"not found\n", "text/plain")
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-protobuf":
            log(f"POST {self.path}: unsupported Content-Type {ctype!r}")
            self.receiver.bad_request()
            return self.fail(415, 3, f"only application/x-protobuf is supported, not {ctype!r}")
        request_type, response_type, flatten = signal_
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding not in ("", "identity"):
                raise ValueError(f"unsupported Content-Encoding {encoding!r}")
            req = request_type()
            req.ParseFromString(body)
        except Exception as e:  # DecodeError, and gzip's OSError / EOFError / zlib.error
            log(f"POST {self.path}: malformed body ({len(body)} bytes): {e}")
            self.receiver.bad_request()
            return self.fail(400, 3, f"malformed {request_type.DESCRIPTOR.name}: {e}")
        if not self.receiver.export("http", req, flatten):
            return self.fail(503, 14, "otlp_receiver: failing on purpose")
        self.reply(200, response_type().SerializeToString(), "application/x-protobuf")


# --- main -----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, help="JSON-lines file for the records (truncated)")
    ap.add_argument("--delay-ms", type=int, default=0, help="wait before answering each export")
    ap.add_argument("--fail-first", type=int, default=0, help="fail the first N export calls")
    args = ap.parse_args()

    receiver = Receiver(args.out, args.delay_ms, args.fail_first)

    # Workers sleeping out --delay-ms hold a thread each; enough for an exporter's retries.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    logs_grpc.add_LogsServiceServicer_to_server(LogsService(receiver), server)
    trace_grpc.add_TraceServiceServicer_to_server(TraceService(receiver), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    if not grpc_port:
        log("cannot bind a gRPC port on 127.0.0.1")
        sys.exit(1)
    server.start()

    Handler.receiver = receiver
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # A harness that dies without killing us closes our stdin: leave then too. Only for a pipe,
    # so that starting it by hand in the background (stdin = /dev/null) does not stop it at once.
    if stat.S_ISFIFO(os.fstat(0).st_mode):

        def watch_stdin():
            while os.read(0, 4096):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"READY grpc=127.0.0.1:{grpc_port} http=127.0.0.1:{httpd.server_address[1]}", flush=True)
    while not stop.wait(1.0):  # a timed wait so that signals are handled promptly
        pass
    httpd.shutdown()
    server.stop(grace=1).wait()
    log(f"stopped: {json.dumps(receiver.status())}")


if __name__ == "__main__":
    main()
