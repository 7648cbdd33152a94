#!/usr/bin/env python3
"""A SPIFFE Workload API server for the end-to-end tests (stands in for a SPIRE agent).

    workload_api.py --proto .../spiffe-0.19.0/src/proto/workload.proto --socket /tmp/x/wl.sock

Compiles the spiffe crate's workload.proto with grpc_tools.protoc at start and serves
SpiffeWorkloadAPI on unix:<socket>. FetchJWTBundles and FetchJWTSVID are implemented (every
other RPC answers UNIMPLEMENTED). Like SPIRE, every call must carry the metadata
`workload.spiffe.io: true`, else INVALID_ARGUMENT "security header missing from request".

FetchJWTBundles is a server stream: it sends the current bundle set at once, then every
update, until the client goes away or the server stops (open streams then fail with
UNAVAILABLE "Cancelling all calls"). While no bundle set has been
configured yet the stream waits for the first one (a JWTBundlesResponse with no bundles is
invalid to clients); a set that is explicitly replaced by `{}` is sent as is.

FetchJWTSVID answers with the JWT-SVID last configured (the test signs it), when the
requested audience is one the SVID carries; with none configured it answers
PERMISSION_DENIED "no identity issued", as SPIRE does for a workload it has no entry for.
Each call's audience is logged to stderr as `FetchJWTSVID audience=[...]`.

Control over stdin, one JSON object per line:
    {"bundles": {"example.org": {"keys": [...]}, ...}}
replaces the bundle set (trust domain -> JWKS; a JWKS given as a JSON string is sent
verbatim, to test malformed bundles) and pushes it to every open stream.
    {"svid": {"spiffe_id": "spiffe://...", "token": "<jwt>", "audience": ["agentgate"]}}
sets the JWT-SVID that FetchJWTSVID returns (null removes it). After each command
one line `OK <n>` goes to stdout, n = number of open FetchJWTBundles streams at that time;
a bad command gets `ERR <reason>`. `READY` is printed once the server listens. The server
exits when stdin closes. Diagnostics go to stderr.

Probe mode (a raw client without the spiffe crate's header interceptor):
    workload_api.py --proto P --socket S --probe [--no-header]
calls FetchJWTBundles once and prints one JSON line: {"ok": true, "bundles": {td: JWKS}}
for the first response, or {"ok": false, "code": "INVALID_ARGUMENT", "details": "..."}.
"""

import argparse
import importlib
import json
import os
import queue
import sys
import tempfile
import threading
from concurrent import futures

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover - environment problem
    print(
        f"workload_api.py: {e}; grpcio and grpcio-tools are needed "
        "(scripts/test installs them into target/e2e-venv)",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(3)

HEADER = "workload.spiffe.io"
PROBE_TIMEOUT = 10.0


def log(msg):
    print(f"workload_api.py: {msg}", file=sys.stderr, flush=True)


def well_known_protos():
    """grpc_tools' bundled google/protobuf/*.proto."""
    try:
        from importlib.resources import files

        return str(files("grpc_tools") / "_proto")
    except Exception:  # older Pythons
        import pkg_resources

        return pkg_resources.resource_filename("grpc_tools", "_proto")


def compile_proto(proto, out_dir):
    proto = os.path.abspath(proto)
    if not os.path.isfile(proto):
        sys.exit(f"workload_api.py: no proto at {proto}")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{os.path.dirname(proto)}",
            f"-I{well_known_protos()}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            proto,
        ]
    )
    if rc != 0:
        sys.exit(f"workload_api.py: protoc failed ({rc}) on {proto}")
    sys.path.insert(0, out_dir)
    name = os.path.splitext(os.path.basename(proto))[0]
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")


class Bundles:
    """The current bundle set and the queues of the open FetchJWTBundles streams."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current = None  # dict td -> bytes, None until configured
        self.streams = set()
        self.stopping = False
        self.svid = None  # {"spiffe_id", "token", "audience"}

    def subscribe(self):
        q = queue.Queue()
        with self.lock:
            if self.stopping:
                return None, None
            self.streams.add(q)
            return q, self.current

    def unsubscribe(self, q):
        with self.lock:
            self.streams.discard(q)
        q.put(None)  # wakes the generator if it is waiting

    def replace(self, bundles):
        with self.lock:
            self.current = bundles
            for q in self.streams:
                q.put(bundles)
            return len(self.streams)

    def stop(self):
        with self.lock:
            self.stopping = True
            streams = list(self.streams)
            self.streams.clear()
        for q in streams:
            q.put(None)


def make_servicer(pb2, pb2_grpc, state):
    class Servicer(pb2_grpc.SpiffeWorkloadAPIServicer):
        def FetchJWTBundles(self, request, context):
            if dict(context.invocation_metadata()).get(HEADER) != "true":
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request"
                )
            q, current = state.subscribe()
            if q is None:
                context.abort(grpc.StatusCode.UNAVAILABLE, "server is stopping")
            # Fires when the RPC ends for any reason (client cancel, server stop).
            context.add_callback(lambda: state.unsubscribe(q))
            # Response headers now, not with the first message: clients (tonic) wait for
            # them before handing out the stream, even while no bundle set exists yet.
            context.send_initial_metadata(())
            log(f"FetchJWTBundles stream opened by {context.peer()}")
            try:
                if current is not None:
                    yield pb2.JWTBundlesResponse(bundles=current)
                while True:
                    item = q.get()
                    if item is None or not context.is_active():
                        return
                    yield pb2.JWTBundlesResponse(bundles=item)
            finally:
                state.unsubscribe(q)
                log("FetchJWTBundles stream closed")

        def FetchJWTSVID(self, request, context):
            if dict(context.invocation_metadata()).get(HEADER) != "true":
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request"
                )
            audience = list(request.audience)
            log(f"FetchJWTSVID audience={json.dumps(audience)}")
            with state.lock:
                svid = state.svid
            if svid is None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
            if not audience or not set(audience) <= set(svid["audience"]):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience not issued")
            return pb2.JWTSVIDResponse(
                svids=[pb2.JWTSVID(spiffe_id=svid["spiffe_id"], svid=svid["token"])]
            )

    return Servicer()


def parse_bundles(value):
    if not isinstance(value, dict):
        raise ValueError('"bundles" must be an object: trust domain -> JWKS')
    out = {}
    for td, jwks in value.items():
        if isinstance(jwks, str):
            out[td] = jwks.encode()
        else:
            out[td] = json.dumps(jwks, separators=(",", ":")).encode()
    return out


def reply(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve(args, pb2, pb2_grpc):
    state = Bundles()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(make_servicer(pb2, pb2_grpc, state), server)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server.add_insecure_port(f"unix:{args.socket}")
    server.start()
    if not os.path.exists(args.socket):
        sys.exit(f"workload_api.py: not listening on {args.socket}")
    log(f"listening on unix:{args.socket}")
    reply("READY")
    try:
        while True:
            line = sys.stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
                if isinstance(cmd, dict) and "svid" in cmd:
                    with state.lock:
                        state.svid = cmd["svid"]
                    log("JWT-SVID " + ("removed" if cmd["svid"] is None else "set"))
                    reply(f"OK {len(state.streams)}")
                    continue
                if not isinstance(cmd, dict) or "bundles" not in cmd:
                    raise ValueError('expected {"bundles": {...}} or {"svid": {...}}')
                n = state.replace(parse_bundles(cmd["bundles"]))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                log(f"bad command {line!r}: {e}")
                reply(f"ERR {e}")
                continue
            log(f"bundles replaced ({', '.join(cmd['bundles']) or 'none'}), pushed to {n} stream(s)")
            reply(f"OK {n}")
    finally:
        log("stdin closed, stopping")
        # Cancels the open streams first (clients see UNAVAILABLE, as when an agent dies)
        # rather than ending them cleanly; then wakes any generator still waiting.
        server.stop(grace=0).wait(5)
        state.stop()
        try:
            os.unlink(args.socket)
        except OSError:
            pass


def probe(args, pb2, pb2_grpc):
    metadata = () if args.no_header else ((HEADER, "true"),)
    with grpc.insecure_channel(f"unix:{args.socket}") as channel:
        stub = pb2_grpc.SpiffeWorkloadAPIStub(channel)
        call = stub.FetchJWTBundles(
            pb2.JWTBundlesRequest(), metadata=metadata, timeout=PROBE_TIMEOUT
        )
        try:
            first = next(call)
        except grpc.RpcError as e:
            out = {"ok": False, "code": e.code().name, "details": e.details()}
        except StopIteration:
            out = {"ok": False, "code": "OK", "details": "stream ended without a response"}
        else:
            out = {
                "ok": True,
                "bundles": {td: json.loads(raw) for td, raw in first.bundles.items()},
            }
        finally:
            call.cancel()
    reply(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto", required=True, help="path of the spiffe crate's workload.proto")
    ap.add_argument("--socket", required=True, help="unix socket path to serve on / probe")
    ap.add_argument("--probe", action="store_true", help="act as a raw client, see above")
    ap.add_argument("--no-header", action="store_true", help="probe without workload.spiffe.io")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wlapi-proto-") as out_dir:
        pb2, pb2_grpc = compile_proto(args.proto, out_dir)
        if args.probe:
            probe(args, pb2, pb2_grpc)
        else:
            serve(args, pb2, pb2_grpc)


if __name__ == "__main__":
    main()
