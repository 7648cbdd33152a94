"""Upstream for the enforced-mode test, run inside the test's network namespace.

HTTPS on :443 (certificate for api.github.com from the test's upstream CA), plain HTTP
on :80 and raw TCP on :9999, on every IPv4 and IPv6 address of the namespace (dual-stack
sockets: a connection that slipped past AgentGate would be answered, and logged). Every request (and every
raw connection) is appended to LOG as a JSON line, so the test can tell what reached the
"internet" and from which address. Prints READY once all three listen.

usage: netns_upstream.py CERT KEY LOG
"""

import json
import socket
import socketserver
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CERT, KEY, LOG = sys.argv[1:4]
lock = threading.Lock()


def log(**record):
    with lock, open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def echo(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        record = {
            "port": self.server.server_address[1],
            "peer": self.client_address[0].removeprefix("::ffff:"),
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        log(kind="request", **record)
        body = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = echo

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        # HTTPServer's own looks up its FQDN: the namespace's resolver does not answer.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "upstream", self.server_address[1]


class TlsServer(Server):
    """Handshakes in the handler's thread, so one slow client cannot stall accept."""

    def __init__(self, addr, handler, context):
        super().__init__(addr, handler)
        self.context = context

    def finish_request(self, request, client_address):
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)


def raw_loop(listener):
    while True:
        conn, peer = listener.accept()
        log(kind="raw", peer=peer[0].removeprefix("::ffff:"))
        conn.close()


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
servers = [TlsServer(("::", 443), Echo, context), Server(("::", 80), Echo)]
raw = socket.socket(socket.AF_INET6)
raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
raw.bind(("::", 9999))
raw.listen(16)
for server in servers:
    threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Thread(target=raw_loop, args=(raw,), daemon=True).start()
print("READY", flush=True)
threading.Event().wait()
