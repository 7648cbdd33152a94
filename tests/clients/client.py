#!/usr/bin/env python3
"""One HTTPS request through the proxy with Python `requests` or `httpx`.

The proxy comes from the HTTPS_PROXY environment variable (as an agent's
environment would set it); the proxy's CA is passed as `verify`. Prints one
JSON line: {"status", "headers", "body", "http_version"}.
"""
import argparse
import json
import ssl
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("lib", choices=["requests", "httpx", "httpx-h2"])
    p.add_argument("url")
    p.add_argument("--ca", required=True, help="CA bundle that signs the proxy's leaf certs")
    p.add_argument("--method", default="GET")
    p.add_argument("--data-file", help="send this file's bytes as the request body")
    p.add_argument("--header", action="append", default=[], help="NAME:VALUE, repeatable")
    a = p.parse_args()
    data = open(a.data_file, "rb").read() if a.data_file else None
    headers = dict(h.split(":", 1) for h in a.header)

    if a.lib == "requests":
        import requests

        r = requests.request(a.method, a.url, data=data, headers=headers, verify=a.ca, timeout=120)
        out = {
            "status": r.status_code,
            "headers": {k.lower(): v for k, v in r.headers.items()},
            "body": r.text,
            "http_version": {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(r.raw.version, str(r.raw.version)),
        }
    else:
        import httpx

        ctx = ssl.create_default_context(cafile=a.ca)
        with httpx.Client(verify=ctx, http2=(a.lib == "httpx-h2"), timeout=120, trust_env=True) as c:
            r = c.request(a.method, a.url, content=data, headers=headers)
            out = {
                "status": r.status_code,
                "headers": {k.lower(): v for k, v in r.headers.items()},
                "body": r.text,
                "http_version": r.http_version,
            }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
