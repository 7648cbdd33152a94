#!/usr/bin/env python3
"""AuthZEN Authorization API 1.0 certification harness (Basic, Batch and Discovery levels).

    authzen_cert.py --base https://127.0.0.1:8443 --cases tests/data/authzen/certification.json \
        [--token TOKEN] [--ca ca.pem]

Runs every case of the cases file (see its "about") against the PDP at --base, which must
have the certification fixture policy loaded (tests/data/authzen/certification), then the
checks the document states without a request of its own:

  c-2-5-1  X-Request-ID echo: every request above carries `X-Request-ID: <random>`, and
           every response (200s and 400s, discovery included) must carry the same value.
           Reported on its own line, listing the responses that lacked it, so that one
           missing header does not hide what each case says.
  c-2-5-2  X-Request-ID absent: a fixture request without the header still gets its 200 and
           its decision.
  c-2-6    Idempotency: the fixture requests c-2-2-1 and c-2-2-2, three times each, give the
           same decision each time.
  c-6      Discovery: GET <base>/.well-known/authzen-configuration (no token) is a 200 JSON
           object whose policy_decision_point is the base URL used, whose
           access_evaluation(s)_endpoint are <base>/access/v1/evaluation(s), and which
           advertises no search_*_endpoint (the PDP has no search APIs).

Every 200 must be `Content-Type: application/json` with a JSON object body: a single
evaluation has a boolean `decision` (and an object `context` if any); a batch has an
`evaluations` array as long as the request's, in its order, each item with a boolean
`decision`. The bearer token is --token, else $AUTHZEN_PDP_API_KEY (the name the working
group's Todo runner uses). TLS is verified with --ca when given.

Prints `PASS <id>` or `FAIL <id>: <why>` per case and check, then a summary; exits 1 if
anything failed.
"""

import argparse
import json
import os
import sys
import uuid
from urllib.parse import urlsplit

import requests

TIMEOUT = 30


class Harness:
    def __init__(self, base, token, ca):
        self.base = base.rstrip("/")
        self.token = token
        self.session = requests.Session()
        # Never a proxy from the environment: the PDP is on loopback.
        self.session.trust_env = False
        self.session.verify = ca if ca else True
        self.results = []  # (id, [problems])
        self.unechoed = []  # what lacked the X-Request-ID echo

    def report(self, cid, problems):
        self.results.append((cid, problems))
        if problems:
            print(f"FAIL {cid}: {'; '.join(problems)}", flush=True)
        else:
            print(f"PASS {cid}", flush=True)

    def send(self, what, method, path, body=None, content_type=None, auth=True, request_id=True):
        """One request; returns (response or None, problems). Checks the X-Request-ID echo."""
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        rid = None
        if request_id:
            rid = f"authzen-cert-{uuid.uuid4()}"
            headers["X-Request-ID"] = rid
        try:
            resp = self.session.request(
                method, self.base + path, data=body, headers=headers, timeout=TIMEOUT
            )
        except requests.RequestException as e:
            return None, [f"{method} {path} failed: {e}"]
        if rid is not None:
            got = resp.headers.get("X-Request-ID")
            if got != rid:
                self.unechoed.append(f"{what} ({resp.status_code}: got {got!r})")
        return resp, []

    # -----------------------------------------------------------------------------------
    # The cases file

    def run_case(self, case):
        if "raw" in case:
            body = case["raw"].encode()
        else:
            body = json.dumps(case["request"]).encode()
        resp, problems = self.send(
            case["id"], "POST", case["endpoint"], body, case.get("content_type", "application/json")
        )
        if resp is not None:
            problems += check_response(case, resp)
        self.report(case["id"], problems)

    # -----------------------------------------------------------------------------------
    # Checks without a case of their own

    def request_id_echo(self):
        if self.unechoed:
            shown = ", ".join(self.unechoed[:6])
            more = f" and {len(self.unechoed) - 6} more" if len(self.unechoed) > 6 else ""
            self.report(
                "c-2-5-1",
                [f"X-Request-ID not echoed on {len(self.unechoed)} response(s): {shown}{more}"],
            )
        else:
            self.report("c-2-5-1", [])

    def request_id_absent(self, fixture):
        case = dict(fixture, id="c-2-5-2")
        resp, problems = self.send(
            "c-2-5-2", "POST", case["endpoint"], json.dumps(case["request"]).encode(),
            "application/json", request_id=False,
        )
        if resp is not None:
            problems += check_response(case, resp)
        self.report("c-2-5-2", problems)

    def idempotency(self, fixtures, times=3):
        problems = []
        for case in fixtures:
            seen = []
            for n in range(times):
                resp, p = self.send(
                    f"c-2-6 {case['id']} #{n + 1}", "POST", case["endpoint"],
                    json.dumps(case["request"]).encode(), "application/json",
                )
                problems += p
                if resp is None:
                    continue
                p = check_response(case, resp)
                problems += [f"{case['id']} #{n + 1}: {x}" for x in p]
                seen.append(decision_of(resp))
            if len(set(map(repr, seen))) > 1:
                problems.append(f"{case['id']} answered {seen} to the same request")
        self.report("c-2-6", problems)

    def discovery(self):
        resp, problems = self.send(
            "c-6 discovery", "GET", "/.well-known/authzen-configuration", auth=False
        )
        if resp is None:
            self.report("c-6", problems)
            return
        if resp.status_code != 200:
            self.report("c-6", [f"status {resp.status_code}, expected 200: {resp.text[:300]}"])
            return
        problems += content_type_problems(resp)
        try:
            meta = resp.json()
        except ValueError as e:
            self.report("c-6", problems + [f"body is not JSON ({e}): {resp.text[:300]}"])
            return
        if not isinstance(meta, dict):
            self.report("c-6", problems + [f"body is not a JSON object: {meta!r}"])
            return
        scheme = urlsplit(self.base).scheme
        want = {
            "policy_decision_point": self.base,
            "access_evaluation_endpoint": self.base + "/access/v1/evaluation",
            "access_evaluations_endpoint": self.base + "/access/v1/evaluations",
        }
        for key, value in want.items():
            if meta.get(key) != value:
                problems.append(f"{key} is {meta.get(key)!r}, expected {value!r}")
        for key, value in meta.items():
            if key.startswith("search_"):
                problems.append(f"{key} advertised ({value!r}) but the PDP has no search API")
            if key == "policy_decision_point" or key.endswith("_endpoint"):
                if not isinstance(value, str) or urlsplit(value).scheme != scheme:
                    problems.append(f"{key} {value!r} is not a {scheme} URL like the base")
                elif urlsplit(value).query or urlsplit(value).fragment:
                    problems.append(f"{key} {value!r} has a query or fragment")
        caps = meta.get("capabilities")
        if caps is not None and not (
            isinstance(caps, list) and all(isinstance(c, str) for c in caps)
        ):
            problems.append(f"capabilities is not an array of strings: {caps!r}")
        signed = meta.get("signed_metadata")
        if signed is not None and not (isinstance(signed, str) and signed.count(".") == 2):
            problems.append(f"signed_metadata is not a JWT: {signed!r}")
        self.report("c-6", problems)


def decision_of(resp):
    try:
        return resp.json().get("decision")
    except (ValueError, AttributeError):
        return None


def content_type_problems(resp):
    ct = resp.headers.get("Content-Type", "")
    if ct.split(";")[0].strip().lower() != "application/json":
        return [f"Content-Type is {ct!r}, expected application/json"]
    return []


def check_response(case, resp):
    """What is wrong with `resp` as the answer to `case` (empty: nothing)."""
    problems = []
    status = case["status"]
    shown = f"{resp.status_code} {resp.text[:400]}"
    if resp.status_code != status:
        return [f"status {resp.status_code}, expected {status}: {shown}"]
    if status != 200:
        return []
    problems += content_type_problems(resp)
    try:
        body = resp.json()
    except ValueError as e:
        return problems + [f"body is not JSON ({e}): {shown}"]
    if not isinstance(body, dict):
        return problems + [f"body is not a JSON object: {shown}"]
    if "decision" in case:
        problems += check_decision(body, case["decision"], "", shown)
        if "evaluations" in body:
            problems.append(f"a single evaluation answered with evaluations: {shown}")
    if "decisions" in case:
        items = body.get("evaluations")
        expected = case["decisions"]
        sent = case["request"].get("evaluations", [])
        if not isinstance(items, list):
            return problems + [f"no evaluations array: {shown}"]
        if len(items) != len(sent):
            problems.append(
                f"{len(items)} evaluations answered for {len(sent)} sent: {shown}"
            )
        for i, (item, want) in enumerate(zip(items, expected)):
            if not isinstance(item, dict):
                problems.append(f"evaluations[{i}] is not an object: {item!r}")
                continue
            problems += check_decision(item, want, f"evaluations[{i}].", shown)
    return problems


def check_decision(obj, want, where, shown):
    problems = []
    got = obj.get("decision")
    if not isinstance(got, bool):
        problems.append(f"{where}decision is {got!r}, not a boolean: {shown}")
    elif want is not None and got != want:
        problems.append(f"{where}decision is {str(got).lower()}, expected {str(want).lower()}: {shown}")
    if "context" in obj and not isinstance(obj["context"], dict):
        problems.append(f"{where}context is not an object: {shown}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the PDP base URL, e.g. https://127.0.0.1:8443")
    ap.add_argument("--cases", required=True, help="the cases file (certification.json)")
    ap.add_argument("--token", default=os.environ.get("AUTHZEN_PDP_API_KEY"),
                    help="bearer token (default: $AUTHZEN_PDP_API_KEY)")
    ap.add_argument("--ca", help="CA file (PEM) to verify the PDP's TLS certificate with")
    args = ap.parse_args()
    if not args.token:
        ap.error("no token: pass --token or set AUTHZEN_PDP_API_KEY")
    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    h = Harness(args.base, args.token, args.ca)
    for case in cases:
        h.run_case(case)
    by_id = {c["id"]: c for c in cases}
    h.request_id_absent(by_id["c-2-2-1"])
    h.idempotency([by_id["c-2-2-1"], by_id["c-2-2-2"]])
    h.discovery()
    # Last: it sums up the echo of every response above.
    h.request_id_echo()
    failed = [cid for cid, problems in h.results if problems]
    print(
        f"authzen certification against {h.base}: {len(h.results)} checks, "
        f"{len(h.results) - len(failed)} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
