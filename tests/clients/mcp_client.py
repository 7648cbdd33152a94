#!/usr/bin/env python3
"""An MCP client built with the official Python SDK (`mcp`: Client over streamable HTTP).

Its HTTP goes through a proxy the way an agent's would: an httpx2 client (the HTTP library
the `mcp` 2.x SDK uses) with `proxy=` the proxy URL (which carries the agent's token, sent as
Proxy-Authorization on CONNECT) and `verify=` the proxy's CA, handed to the transport.

Usage: mcp_client.py URL [--proxy PROXY_URL] --ca CA.pem [--header NAME:VALUE ...]
       [--mode auto|legacy|2026-07-28] [--timeout-ms MS] COMMAND
  COMMAND: list | call TOOL JSON_ARGS | read URI | prompt NAME [JSON_ARGS] | script FILE
  Same CLI, script steps and output shape as mcp_client.mjs (no `terminate`: leaving the
  SDK's Client sends the DELETE). --mode is the SDK's: `auto` (its default) first probes
  `server/discover` and falls back to `initialize`.
The response cache of the SDK is off, so every step reaches the server.
Prints one JSON object; exits 0 whenever it could be printed.
"""

import argparse
import json
import ssl
import sys
import time
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def steps_from(a: argparse.Namespace) -> list[dict[str, Any]]:
    rest = a.rest
    if a.command == "list":
        return [{"op": "list"}]
    if a.command == "call":
        return [{"op": "call", "tool": rest[0], "args": json.loads(rest[1] if len(rest) > 1 else "{}")}]
    if a.command == "read":
        return [{"op": "read", "uri": rest[0]}]
    if a.command == "prompt":
        return [{"op": "prompt", "name": rest[0], "args": json.loads(rest[1] if len(rest) > 1 else "{}")}]
    if a.command == "script":
        with open(rest[0], encoding="utf-8") as f:
            return json.load(f)
    raise SystemExit(f"unknown command {a.command!r}")


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


async def run(a: argparse.Namespace) -> dict[str, Any]:
    steps = steps_from(a)
    headers = dict(h.split(":", 1) for h in a.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    out: dict[str, Any] = {"client": "python", "sdk": "mcp", "steps": []}
    notifications: list[dict[str, Any]] = []
    http: list[dict[str, Any]] = []
    out["notifications"] = notifications
    out["http"] = http
    out["transport_errors"] = []
    # Each notification is tagged with the step running when it came and the time it came
    # (ms since start), so a test can tell a trickle from a burst.
    current: dict[str, Any] = {"step": None}
    started = time.monotonic()
    arrived: dict[str, anyio.Event] = {}

    def note(method: str, params: Any) -> None:
        at_ms = round((time.monotonic() - started) * 1000)
        notifications.append({"step": current["step"], "at_ms": at_ms, "method": method, "params": params})
        arrived.setdefault(method, anyio.Event()).set()

    # Every HTTP exchange the transport makes, as it made it.
    async def on_request(request: httpx2.Request) -> None:
        entry = {"method": request.method, "url": str(request.url), "headers": dict(request.headers), "status": None}
        request.extensions["agentgate_log"] = entry
        http.append(entry)

    async def on_response(response: httpx2.Response) -> None:
        entry = response.request.extensions.get("agentgate_log")
        if entry is not None:
            entry["status"] = response.status_code
            entry["response_headers"] = dict(response.headers)

    async def message_handler(message: Any) -> None:
        if isinstance(message, Exception):
            out["transport_errors"].append({"step": current["step"], **describe(message)})
            return
        root = getattr(message, "root", message)
        params = getattr(root, "params", None)
        note(root.method, dump(params) if params is not None else None)

    def describe(e: BaseException) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": type(e).__name__, "message": str(e)}
        if isinstance(e, MCPError):
            d["code"] = e.code
            d["message"] = e.message
            if e.data is not None:
                d["data"] = e.data
            # The SDK turns an HTTP refusal into a JSON-RPC error; name the status too.
            last = next((h for h in reversed(http) if h["method"] == "POST" and h["status"] is not None), None)
            if last is not None and last["status"] >= 400:
                d["http_status"] = last["status"]
        elif e.__cause__ is not None:
            d["cause"] = str(e.__cause__)
        return d

    # A progress callback makes the SDK send a progressToken; the notifications themselves
    # reach message_handler too (with the token), which records them.
    async def progress(p: float, total: float | None, message: str | None) -> None:
        pass

    async def step_result(client: Client, step: dict[str, Any]) -> Any:
        op = step["op"]
        if op == "list":
            return dump(await client.list_tools())
        if op == "call":
            return dump(await client.call_tool(step["tool"], step.get("args") or {}, progress_callback=progress))
        if op == "read":
            return dump(await client.read_resource(step["uri"]))
        if op == "prompt":
            return dump(await client.get_prompt(step["name"], step.get("args") or {}))
        if op == "ping":
            return dump(await client.send_ping())
        if op == "wait":
            ms = step.get("timeout_ms", 10000)
            with anyio.fail_after(ms / 1000):
                await arrived.setdefault(step["method"], anyio.Event()).wait()
            return {"arrived": True}
        raise ValueError(f"unknown step op {op!r}")

    verify: ssl.SSLContext = ssl.create_default_context(cafile=a.ca)
    http_client = httpx2.AsyncClient(
        proxy=a.proxy,
        verify=verify,
        headers=headers,
        trust_env=False,
        timeout=httpx2.Timeout(a.timeout_ms / 1000),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with http_client:
        transport = streamable_http_client(a.url, http_client=http_client)
        client = Client(
            transport,
            mode=a.mode,
            cache=None,
            read_timeout_seconds=a.timeout_ms / 1000,
            message_handler=message_handler,
        )
        try:
            await client.__aenter__()
        except Exception as e:  # noqa: BLE001 - the test reads what failed
            out["connect"] = {"ok": False, "error": describe(e)}
            for step in steps:
                out["steps"].append({"op": step["op"], "ok": False, "error": {"kind": "NotConnected"}})
            return out
        try:
            info = client.server_info
            out["connect"] = {"ok": True, "server": dump(info) if info is not None else None}
            out["protocol_version"] = client.protocol_version
            for i, step in enumerate(steps):
                current["step"] = i
                try:
                    out["steps"].append({"op": step["op"], "ok": True, "result": await step_result(client, step)})
                except Exception as e:  # noqa: BLE001 - the test reads what failed
                    out["steps"].append({"op": step["op"], "ok": False, "error": describe(e)})
            current["step"] = None
            out["session_id"] = next(
                (h["headers"].get("mcp-session-id") for h in reversed(http) if "mcp-session-id" in h["headers"]),
                None,
            )
        finally:
            # Leaving the client ends the session (DELETE with Mcp-Session-Id).
            await client.__aexit__(None, None, None)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("command", choices=["list", "call", "read", "prompt", "script"])
    p.add_argument("rest", nargs="*")
    p.add_argument("--proxy", help="HTTP proxy URL (may carry credentials); none: connect directly")
    p.add_argument("--ca", required=True, help="CA bundle for the server (or the proxy's MITM) certificates")
    p.add_argument("--header", action="append", default=[], help="NAME:VALUE, repeatable")
    p.add_argument("--mode", default="auto", help="the SDK's connect mode: auto, legacy, or a modern version")
    p.add_argument("--timeout-ms", type=int, default=60000, help="per request")
    a = p.parse_intermixed_args()
    out = anyio.run(run, a)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
