#!/usr/bin/env python3
"""Generates the AgentGate service catalog (config/services/*.json) from vendor API descriptions.

    python3 config/services/generate.py            # download (or reuse cache), write the five files
    python3 config/services/generate.py --check    # regenerate in memory, compare with committed files
    python3 config/services/generate.py --out DIR  # write elsewhere
    python3 config/services/generate.py --samples 8  # also print a sample of every class per service

Standard library only. Every source is a package from a public registry, pinned by version AND the
SHA-256 of the downloaded archive; a mismatch stops the run (exit 2). Downloads are cached in
target/catalog-sources/ (or --cache DIR), so a second run needs no network. Nothing is extracted:
the vendor descriptions are read straight out of the tarball / wheel.

The contract for the output format is section 1 of the intent-policy spec: operations sorted by
(path, method), JSON with indent=1, sort_keys=True, ensure_ascii=False and a trailing newline.

Facts checked in the sources (asserted below; the run fails if they stop being true):
  * GitHub REST (@octokit/openapi 23.0.2, api.github.com.json, OpenAPI 3.0.3): 1223 operations,
    every one has an operationId, operationIds are unique, and there are no duplicate
    (method, path) pairs — the generator still checks all three and fails on a violation.
  * GitHub marks multi-segment path parameters with `x-multi-segment: true` (39 (path, param)
    pairs: ref, path, branch, tag, sha, commit_sha, tree_sha, basehead, dir, subject_digest).
    Only a LAST segment can be `{+name}` in the catalog, so a marked parameter becomes `{+name}`
    when it ends the path and stays `{name}` (one segment) in the middle of a path, e.g.
    /repos/{owner}/{repo}/branches/{branch}/protection: a branch with a "/" there does not match
    that route (the proxy then sees an unknown path, which fails safe).
  * Exactly one operation has `servers`: repos/upload-release-asset on https://uploads.github.com
    → "host": "uploads.github.com". Any other server is an error.
  * One path has a segment mixing parameters and text: /repos/{owner}/{repo}/compare/{base}...{head}
    (repos/compare-commits, octokit's legacy alias). The catalog cannot express it, and the same
    URLs are already matched by repos/compare-commits-with-basehead (/compare/{+basehead}, same
    method, same class), so it is listed under "skipped" instead (GITHUB_ALIASES below).
  * Gmail (discovery gmail.v1.json in google-api-python-client 2.202.0): 79 methods; 6 support media
    upload (simple path /upload/gmail/v1/...); with the 3 below skipped → 82 operations.
    servicePath is "" and flatPath == path. Resumable uploads (/resumable/upload/..., then PUT to a
    session URI) and the batch endpoint (/batch/gmail/v1) are not operations: the proxy sees them as unknown.
    Three methods use Google's custom-verb form `{keyPairId}:disable|enable|obliterate`; a segment
    cannot mix a parameter and text in the catalog, and all three are POST on the same path, so they
    cannot be told apart: they are "skipped" (GMAIL_SKIPPED) and the proxy sees them as unknown.
  * GraphQL (@octokit/graphql-schema 15.26.1) ships schema.json (an introspection result); it is used
    in preference to schema.graphql. Query has 30 fields, Mutation 242, there is no Subscription type.
  * Slack (@slack/web-api 8.2.0): dist/methods.js binds 280 distinct methods with
    bindApiCall(this, '<method>') / bindApiCallWithOptionalArgument(this, '<method>').
  * github-git.json is the one file NOT derived from a vendor description: GitHub publishes
    none for git over HTTPS, so its four operations are written out in GIT_SMART_HTTP below,
    after git's own protocol document (gitprotocol-http(5)). Nothing is downloaded for it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Pinned sources. sha256 is of the archive exactly as the registry serves it.
# ---------------------------------------------------------------------------------------------
SOURCES = {
    "octokit-openapi": {
        "registry": "npm",
        "package": "@octokit/openapi",
        "version": "23.0.2",
        "sha256": "71a18407dd5e8464f4e0525daf03deabbe65abd9287d6adc7b5d98f516cd0d0c",
    },
    "octokit-graphql-schema": {
        "registry": "npm",
        "package": "@octokit/graphql-schema",
        "version": "15.26.1",
        "sha256": "053e74249dafce2118fd9b7ae499b067d57c5f910c57745699ac45108bc68d1e",
    },
    "google-api-python-client": {
        "registry": "pypi",
        "package": "google-api-python-client",
        "version": "2.202.0",
        "filename": "google_api_python_client-2.202.0-py3-none-any.whl",
        "sha256": "aaa90064c9bb642ff1d065b22ca8958a2cb6e345909cefe70d0e5452fc50e08b",
    },
    "slack-web-api": {
        "registry": "npm",
        "package": "@slack/web-api",
        "version": "8.2.0",
        "sha256": "5d046d13a3cda62aae3cc49092542d32655424120ffcbbc0c4d601986b0b00aa",
    },
}

GENERATED_BY = "config/services/generate.py"

# ---------------------------------------------------------------------------------------------
# Classification rules. read → allow, write → escalate, delete → deny in the default policy, so
# when in doubt a rule errs towards write (a human looks) rather than read (nobody looks).
# ---------------------------------------------------------------------------------------------

# --- GitHub REST ---
# GET/HEAD never change state in GitHub's API: read.
GITHUB_READ_METHODS = {"GET", "HEAD"}
# DELETE always removes something (a resource, a membership, a block, a suspension): delete.
GITHUB_DELETE_METHODS = {"DELETE"}
# POST/PUT/PATCH whose operationId verb (first word after "/", or the word after "bulk-") destroys
# or revokes: orgs/delete-attestations-bulk, credentials/revoke, enterprise-team-*/bulk-remove.
# Not "cancel", "disable", "suspend", "lock", "dismiss", "reset": they change state, reversibly.
GITHUB_DELETE_VERBS = {"delete", "remove", "revoke", "destroy", "purge", "erase", "wipe", "uninstall"}
# Explicit per-operationId overrides (none needed for 23.0.2; POST reads such as markdown/render
# or apps/check-token stay write on purpose: a POST body is not inspected, so escalate).
GITHUB_CLASS_OVERRIDES: dict[str, str] = {}
# Path params that take the rest of the path when the spec has no x-multi-segment marker on them
# (the contract's fallback; in 23.0.2 every such param is already marked).
GITHUB_REST_PARAM_FALLBACK = {"path", "ref"}
# Operations whose path cannot be expressed (a segment mixing parameters and text) but whose URLs
# are fully covered by another operation with the same method and class: listed as skipped.
GITHUB_ALIASES = {
    # /compare/{base}...{head} is the same URL space as /compare/{+basehead} (basehead = "A...B").
    "repos/compare-commits": "repos/compare-commits-with-basehead",
}
GITHUB_HOST = "api.github.com"
GITHUB_UPLOADS_HOST = "uploads.github.com"

# --- GitHub GraphQL ---
# Query fields only read.
# Mutations: the first camelCase word decides. These destroy data or take access away:
# delete*, remove* (removeOutsideCollaborator, removeEnterpriseMember, ...), revoke* (revokeMigratorRole),
# unlink* (unlinkProjectV2FromRepository: drops an association, like REST DELETE .../links),
# clear* (clearLabelsFromLabelable: like REST DELETE .../labels = issues/remove-all-labels).
# Everything else is write, including archive*/close*/cancel*/abort*/disable*/dismiss*/retire*
# (reversible state changes) and un-* reversals (unarchive, unfollow, unpin, unlock, ...).
GRAPHQL_DELETE_VERBS = {"delete", "remove", "revoke", "unlink", "clear"}
GRAPHQL_CLASS_OVERRIDES: dict[str, str] = {}

# --- Gmail ---
# GET only reads (users.settings.get*, *.list, *.get).
# DELETE, or a method id whose last part is one of these, destroys mail or settings:
# messages.trash/threads.trash move mail to Trash (purged after 30 days), batchDelete is permanent.
GMAIL_DELETE_SUFFIXES = {"delete", "batchDelete", "trash", "obliterate"}
# Everything else is write (send, modify, batchModify, untrash, settings.update*, watch, stop, ...).
# Methods whose JSON body carries an RFC 5322 message in `raw` (non-upload paths).
GMAIL_MESSAGE_BODY = {
    "gmail.users.messages.send",
    "gmail.users.messages.import",
    "gmail.users.messages.insert",
    "gmail.users.drafts.create",
    "gmail.users.drafts.update",
    "gmail.users.drafts.send",
}
# Methods the catalog cannot express: a last segment `{keyPairId}:verb` (Google custom verb). All three
# are POST on .../keypairs/{keyPairId}:<verb>; one route could not tell them apart. Unknown → fails safe.
GMAIL_SKIPPED = {
    "gmail.users.settings.cse.keypairs.disable": "custom-verb segment {keyPairId}:disable",
    "gmail.users.settings.cse.keypairs.enable": "custom-verb segment {keyPairId}:enable",
    "gmail.users.settings.cse.keypairs.obliterate": "custom-verb segment {keyPairId}:obliterate",
}
GMAIL_HOST = "gmail.googleapis.com"

# --- Slack ---
# The last dotted part of the method name decides (conversations.history → "history").
# Exact last parts that only read.
SLACK_READ_VERBS = {"list", "info", "history", "replies", "members", "test", "search", "validate"}
# camelCase prefixes of the last part that only read: getPermalink, listConnectInvites, lookupByEmail,
# searchX. (files.getUploadURLExternal is the exception: see overrides.)
SLACK_READ_PREFIXES = ("get", "list", "lookup", "search")
# First parts whose every method only reads: search.all, search.files, search.messages.
SLACK_READ_FAMILIES = {"search"}
# camelCase prefixes of the last part that destroy or take access away: delete, chat.deleteScheduledMessage,
# users.deletePhoto, remove*, revoke (auth.revoke, files.revokePublicURL), apps.uninstall, ...
# A leading "bulk" is skipped (admin.conversations.bulkDelete → delete; bulkArchive → write).
SLACK_DELETE_PREFIXES = ("delete", "remove", "revoke", "uninstall", "wipe", "purge", "disconnect")
# "archive" is NOT delete: conversations.archive is undone by conversations.unarchive.
# Explicit overrides, each with its reason.
SLACK_CLASS_OVERRIDES = {
    # Reads that the verb rule would call write:
    "users.conversations": "read",  # lists the conversations a user is in
    "users.identity": "read",  # returns the signed-in user's identity
    "openid.connect.userInfo": "read",  # returns the OpenID user profile
    "dnd.teamInfo": "read",  # Do-Not-Disturb status of several users
    "team.accessLogs": "read",  # access log listing
    "team.billableInfo": "read",  # billable status listing
    "team.integrationLogs": "read",  # integration log listing
    "apps.manifest.export": "read",  # returns an app's manifest (no side effect)
    "migration.exchange": "read",  # maps local user ids to global ids (lookup only)
    # Writes that the verb rule would call read:
    "files.getUploadURLExternal": "write",  # starts a file upload: reserves a file and an upload URL
    # Deletes that the verb rule would call write:
    "conversations.kick": "delete",  # removes a member from a channel
    "admin.users.session.invalidate": "delete",  # revokes a user's session
    "admin.users.session.reset": "delete",  # wipes all of a user's sessions
    "admin.users.session.resetBulk": "delete",  # wipes all sessions of many users
}
SLACK_HOST = "slack.com"

# --- git over HTTPS on github.com: HAND-WRITTEN, not from a vendor description ---
# GitHub publishes no machine-readable description of its git endpoints: they are git's own
# "smart HTTP" protocol (gitprotocol-http(5), https://git-scm.com/docs/gitprotocol-http),
# which github.com serves for every repository at https://github.com/{owner}/{repo}[.git].
# A client discovers refs with GET .../info/refs?service=<service>, then POSTs to .../<service>:
# git-upload-pack sends objects to the client (clone, fetch, pull, ls-remote): read;
# git-receive-pack takes objects and moves refs (push, including branch deletion): write.
# info/refs is one path whose operation the `service` query parameter names, so those two
# operations carry "query": {"service": ...}; the proxy picks by it and refuses a missing,
# repeated or unknown value (src/intent/refine.rs). "{repo}" may end in ".git" (git adds it
# to URLs, GitHub accepts both): "strip_suffix" drops it from the resource id.
# Dumb HTTP (GET of .../objects/...) and LFS (.../info/lfs/...) are not listed: unknown.
GIT_HOST = "github.com"
GIT_SPEC = {"document": "gitprotocol-http(5)", "url": "https://git-scm.com/docs/gitprotocol-http",
            "note": "hand-written in config/services/generate.py (GIT_SMART_HTTP), not a vendor description"}
GIT_SERVICES = {"git-upload-pack": ("github.git.fetch", "read"), "git-receive-pack": ("github.git.push", "write")}
GIT_SMART_HTTP = [
    op
    for service, (action, cls) in GIT_SERVICES.items()
    for op in (
        {"action": action, "class": cls, "method": "GET", "path": "/{owner}/{repo}/info/refs",
         "query": {"service": service}},
        {"action": action, "class": cls, "method": "POST", "path": "/{owner}/{repo}/" + service},
    )
]

# ---------------------------------------------------------------------------------------------

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CLASSES = ("read", "write", "delete")
BODY_KINDS = {"graphql", "gmail.message", "gmail.upload", "slack"}
USER_AGENT = "agentgate-catalog-generator/1"


class SourceError(Exception):
    """A pinned source could not be had or did not match its pin (exit 2)."""


class GenerateError(Exception):
    """The vendor description broke an assumption of this generator (exit 3)."""


# ----------------------------------------------------------------------------- downloads


def _get(url: str, timeout: float = 120.0) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def _pypi_wheel_url(src: dict) -> tuple[str, str | None]:
    """Finds the wheel's URL (and the registry's own sha256 of it) via the PyPI JSON API."""
    name, version, filename = src["package"], src["version"], src["filename"]
    tried = []
    for api in (
        f"https://pypi.org/pypi/{name}/{version}/json",
        # Some mirrors only serve the project-level document; its "releases" has the same files.
        f"https://pypi.org/pypi/{name}/json",
    ):
        try:
            doc = json.loads(_get(api))
        except (urllib.error.URLError, OSError, ValueError) as e:
            tried.append(f"{api}: {e}")
            continue
        files = doc.get("urls") if api.endswith(f"/{version}/json") else doc.get("releases", {}).get(version)
        for f in files or []:
            if f.get("filename") == filename:
                return urllib.parse.urljoin(api, f["url"]), f.get("digests", {}).get("sha256")
        tried.append(f"{api}: no file {filename}")
    raise SourceError(f"PyPI: cannot find {filename}: " + "; ".join(tried))


def _archive_name(src: dict) -> str:
    if src["registry"] == "npm":
        return f"{src['package'].split('/')[-1]}-{src['version']}.tgz"
    return src["filename"]


def fetch(key: str, cache: Path) -> tuple[bytes, dict]:
    """Returns the pinned archive's bytes, from the cache or the registry, verified."""
    src = SOURCES[key]
    name = _archive_name(src)
    path = cache / name
    if path.exists():
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest == src["sha256"]:
            return data, src
        print(f"cache: {path} has sha256 {digest}, pin is {src['sha256']}: downloading again", file=sys.stderr)
    if src["registry"] == "npm":
        url = f"https://registry.npmjs.org/{src['package']}/-/{name}"
        registry_sha = None
    else:
        url, registry_sha = _pypi_wheel_url(src)
    print(f"download: {url}", file=sys.stderr)
    try:
        data = _get(url)
    except (urllib.error.URLError, OSError) as e:
        raise SourceError(f"cannot download {src['package']}@{src['version']} from {url}: {e}") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != src["sha256"]:
        raise SourceError(
            f"{src['package']}@{src['version']} ({url}): sha256 {digest} does not match the pin "
            f"{src['sha256']}. Refusing to use it. If the new archive is legitimate, review it and "
            f"update SOURCES in {GENERATED_BY}."
        )
    if registry_sha and registry_sha != digest:
        raise SourceError(f"{url}: the registry says sha256 {registry_sha}, the download is {digest}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data, src


def read_member(archive: bytes, src: dict, member: str) -> bytes:
    """Reads one file out of a .tgz or .whl held in memory (nothing is extracted to disk)."""
    if src["registry"] == "npm":
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tf:
            try:
                f = tf.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise GenerateError(f"{src['package']}@{src['version']}: no file {member}")
            return f.read()
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        try:
            return zf.read(member)
        except KeyError as e:
            raise GenerateError(f"{src['package']}@{src['version']}: no file {member}") from e


def source_entry(src: dict, member: str, **extra) -> dict:
    entry = {
        "package": f"{'npm' if src['registry'] == 'npm' else 'pypi'}:{src['package']}@{src['version']}",
        "file": member,
        "sha256": src["sha256"],
    }
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry


# ----------------------------------------------------------------------------- shared checks

PARAM_SEG = re.compile(r"^\{(\+?)([^{}/+][^{}/]*)\}$")


def path_params(path: str) -> list[str]:
    return [m.group(2) for seg in path.split("/")[1:] if (m := PARAM_SEG.match(seg))]


def route_key(op: dict) -> tuple:
    """What the proxy's trie keys on: host, method and the path with parameter names erased."""
    segs = []
    for seg in op["path"].split("/")[1:]:
        m = PARAM_SEG.match(seg)
        segs.append(("{+}" if m.group(1) else "{}") if m else seg)
    return (op.get("host", ""), op["method"], "/".join(segs), json.dumps(op.get("query"), sort_keys=True))


def validate(service: dict, fname: str) -> None:
    """Checks a generated file against the contract before anything is written."""
    seen: dict[tuple, str] = {}
    query_params: dict[tuple, tuple] = {}
    for op in service["operations"]:
        where = f"{fname}: {op['action']} {op['method']} {op['path']}"
        if op["class"] not in CLASSES:
            raise GenerateError(f"{where}: bad class {op['class']}")
        if op["method"] != "*" and (op["method"] != op["method"].upper() or not op["method"].isalpha()):
            raise GenerateError(f"{where}: bad method")
        if not op["path"].startswith("/"):
            raise GenerateError(f"{where}: path must start with /")
        segs = op["path"].split("/")[1:]
        for i, seg in enumerate(segs):
            m = PARAM_SEG.match(seg)
            if m is None and ("{" in seg or "}" in seg):
                raise GenerateError(f"{where}: segment {seg!r} mixes a parameter and text")
            if m and m.group(1) and i != len(segs) - 1:
                raise GenerateError(f"{where}: {{+{m.group(2)}}} is not the last segment")
        if "query" in op:
            q = op["query"]
            if not (isinstance(q, dict) and len(q) == 1 and all(isinstance(v, str) and v for v in q.values())):
                raise GenerateError(f"{where}: query must name exactly one parameter and its value")
        for name, suffix in op.get("strip_suffix", {}).items():
            if name not in path_params(op["path"]) or not suffix.isascii() or not suffix:
                raise GenerateError(f"{where}: strip_suffix {name}={suffix!r} needs a path parameter and an ASCII suffix")
        if "body" in op and op["body"] not in BODY_KINDS:
            raise GenerateError(f"{where}: bad body {op['body']}")
        if "host" in op and op["host"] not in service["hosts"][1:]:
            raise GenerateError(f"{where}: host {op['host']} is not one of the extra hosts")
        if "resource" in op:
            names = set(path_params(op["path"]))
            for ref in re.findall(r"\{([^}]*)\}", op["resource"]["id"]):
                if ref not in names:
                    raise GenerateError(f"{where}: resource id uses {{{ref}}}, not a path parameter")
        key = route_key(op)
        if key in seen:
            raise GenerateError(f"{where}: duplicate route, same as {seen[key]}")
        seen[key] = op["action"]
        # Operations sharing a route must all be told apart by the same query parameter.
        param = next(iter(op["query"])) if "query" in op else None
        if key[:3] not in query_params:
            query_params[key[:3]] = (param, op["action"])
        elif param is None or query_params[key[:3]][0] != param:
            raise GenerateError(f"{where}: shares its route with {query_params[key[:3]][1]} "
                                "without the same query parameter")
    keys = [op_sort_key(op) for op in service["operations"]]
    if keys != sorted(keys):
        raise GenerateError(f"{fname}: operations not sorted")


def op_sort_key(op: dict) -> tuple:
    return (op["path"], op["method"], op.get("host", ""), json.dumps(op.get("query"), sort_keys=True))


def sort_ops(ops: list[dict]) -> list[dict]:
    return sorted(ops, key=op_sort_key)


# ----------------------------------------------------------------------------- GitHub REST


def _resolve(doc: dict, obj: dict) -> dict:
    while "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def github_class(method: str, op_id: str) -> str:
    if op_id in GITHUB_CLASS_OVERRIDES:
        return GITHUB_CLASS_OVERRIDES[op_id]
    if method in GITHUB_READ_METHODS:
        return "read"
    if method in GITHUB_DELETE_METHODS:
        return "delete"
    words = op_id.split("/", 1)[1].split("-")
    verb = words[1] if words[0] == "bulk" and len(words) > 1 else words[0]
    return "delete" if verb in GITHUB_DELETE_VERBS else "write"


def github_resource(params: list[str]) -> dict | None:
    for p in params:
        if p == "owner" or p.endswith("_owner"):
            partner = p[: -len("owner")] + "repo"
            if partner in params:
                return {"type": "github.repo", "id": f"{{{p}}}/{{{partner}}}"}
    for name, rtype in (("org", "github.org"), ("username", "github.user"),
                        ("enterprise", "github.enterprise"), ("gist_id", "github.gist")):
        if name in params:
            return {"type": rtype, "id": f"{{{name}}}"}
    return None


def build_github(cache: Path, notes: list[str]) -> dict:
    archive, src = fetch("octokit-openapi", cache)
    member = "package/generated/api.github.com.json"
    doc = json.loads(read_member(archive, src, member))
    default_server = urllib.parse.urlsplit(doc.get("servers", [{"url": "https://" + GITHUB_HOST}])[0]["url"]).netloc
    if default_server != GITHUB_HOST:
        raise GenerateError(f"GitHub spec default server is {default_server}")
    ops: list[dict] = []
    skipped: list[dict] = []
    by_id: dict[str, dict] = {}
    aliases: list[tuple[dict, str]] = []
    seen_pairs: set[tuple[str, str]] = set()
    hosts = [GITHUB_HOST]
    multi_mid: set[tuple[str, str]] = set()
    multi_found = 0
    for path, item in doc["paths"].items():
        if "servers" in item:
            raise GenerateError(f"GitHub {path}: path-level servers are not handled")
        common = [_resolve(doc, p) for p in item.get("parameters", [])]
        for m in HTTP_METHODS:
            if m not in item:
                continue
            op = item[m]
            method = m.upper()
            op_id = op.get("operationId")
            if not op_id or "/" not in op_id:
                raise GenerateError(f"GitHub {method} {path}: missing or odd operationId {op_id!r}")
            if (method, path) in seen_pairs:
                raise GenerateError(f"GitHub: duplicate {method} {path}")
            seen_pairs.add((method, path))
            params = {p["name"]: p for p in common + [_resolve(doc, p) for p in op.get("parameters", [])]
                      if p.get("in") == "path"}
            host = GITHUB_HOST
            if "servers" in op:
                urls = {urllib.parse.urlsplit(s["url"]).netloc for s in op["servers"]}
                if urls != {GITHUB_UPLOADS_HOST}:
                    raise GenerateError(f"GitHub {op_id}: unexpected servers {sorted(urls)}")
                host = GITHUB_UPLOADS_HOST
                if host not in hosts:
                    hosts.append(host)
            segs = path.split("/")[1:]
            out_segs = []
            compound = False
            for i, seg in enumerate(segs):
                mm = re.fullmatch(r"\{([^{}]+)\}", seg)
                if mm is None:
                    if "{" in seg or "}" in seg:
                        compound = True
                    out_segs.append(seg)
                    continue
                name = mm.group(1)
                if name not in params:
                    raise GenerateError(f"GitHub {op_id}: path parameter {name} is not declared")
                marked = bool(params[name].get("x-multi-segment") or params[name].get("schema", {}).get("x-multi-segment"))
                multi_found += marked
                last = i == len(segs) - 1
                if last and (marked or name in GITHUB_REST_PARAM_FALLBACK):
                    out_segs.append("{+" + name + "}")
                else:
                    if marked:
                        multi_mid.add((path, name))
                    out_segs.append(seg)
            entry = {
                "action": "github." + op_id.replace("/", "."),
                "method": method,
                "path": "/" + "/".join(out_segs),
                "class": github_class(method, op_id),
            }
            if host != GITHUB_HOST:
                entry["host"] = host
            res = github_resource(path_params(entry["path"]) if not compound else list(params))
            if res:
                entry["resource"] = res
            if op_id in by_id:
                raise GenerateError(f"GitHub: duplicate operationId {op_id}")
            by_id[op_id] = entry
            if compound:
                if op_id not in GITHUB_ALIASES:
                    raise GenerateError(f"GitHub {op_id}: segment mixing parameters and text in {path}; "
                                        "add it to GITHUB_ALIASES if another operation covers it")
                aliases.append((entry, path))
                continue
            ops.append(entry)
    for entry, orig in aliases:
        op_id = entry["action"][len("github."):].replace(".", "/", 1)
        target = by_id.get(GITHUB_ALIASES[op_id])
        if target is None or target["method"] != entry["method"] or target["class"] != entry["class"]:
            raise GenerateError(f"GitHub alias {op_id} → {GITHUB_ALIASES[op_id]}: target missing or differs")
        # The alias must differ from its target only from the compound segment on, and the target
        # must take the rest of the path there ({+name}), so every URL of the alias matches the target.
        osegs, tsegs = orig.split("/"), target["path"].split("/")
        i = next(k for k, seg in enumerate(osegs) if "{" in seg and not re.fullmatch(r"\{[^{}]+\}", seg))
        same_prefix = [re.sub(r"\{[^}]*\}", "{}", x) for x in osegs[:i]] == [re.sub(r"\{[^}]*\}", "{}", x) for x in tsegs[:i]]
        if not (same_prefix and len(tsegs) == i + 1 and tsegs[i].startswith("{+")):
            raise GenerateError(f"GitHub alias {op_id}: {target['path']} does not cover {orig}")
        skipped.append({"action": entry["action"], "method": entry["method"], "path": orig,
                        "reason": f"segment mixes parameters and text; same URLs as {target['action']} {target['path']}"})
    missing_aliases = set(GITHUB_ALIASES) - {e["action"][len("github."):].replace(".", "/", 1) for e, _ in aliases}
    if missing_aliases:
        raise GenerateError(f"GITHUB_ALIASES lists operations that no longer have a compound segment: {sorted(missing_aliases)}")
    stale = set(GITHUB_CLASS_OVERRIDES) - set(by_id)
    if stale:
        raise GenerateError(f"GITHUB_CLASS_OVERRIDES names unknown operations: {sorted(stale)}")
    if "/graphql" in doc["paths"]:
        raise GenerateError("GitHub REST spec has /graphql: it belongs in github-graphql.json")
    notes.append(f"github: {len(seen_pairs)} (method, path) pairs in the spec, all with a unique operationId; "
                 f"{multi_found} x-multi-segment path parameter uses, {len(multi_mid)} of them mid-path (kept as one segment); "
                 f"hosts {hosts}; skipped {len(skipped)} alias(es)")
    if multi_mid:
        notes.append("github: mid-path multi-segment params (one segment in the catalog): "
                     + ", ".join(f"{{{n}}} in {p}" for p, n in sorted(multi_mid)))
    return {
        "service": "github",
        "hosts": hosts,
        "generated_by": GENERATED_BY,
        "sources": [source_entry(src, member, api_version=doc["info"]["version"], openapi=doc.get("openapi"))],
        "default_resource": {"type": "github.api", "id": GITHUB_HOST},
        "operations": sort_ops(ops),
        "skipped": sorted(skipped, key=lambda s: (s["path"], s["method"])),
    }


# ----------------------------------------------------------------------------- GitHub GraphQL


def graphql_mutation_class(name: str) -> str:
    if name in GRAPHQL_CLASS_OVERRIDES:
        return GRAPHQL_CLASS_OVERRIDES[name]
    verb = re.match(r"[a-z]+", name).group(0)
    return "delete" if verb in GRAPHQL_DELETE_VERBS else "write"


def build_github_graphql(cache: Path, notes: list[str]) -> dict:
    archive, src = fetch("octokit-graphql-schema", cache)
    member = "package/schema.json"
    doc = json.loads(read_member(archive, src, member))
    schema = doc.get("data", doc)["__schema"]
    types = {t["name"]: t for t in schema["types"]}
    fields: dict[str, dict[str, str]] = {}
    for key, optype in (("queryType", "query"), ("mutationType", "mutation"), ("subscriptionType", "subscription")):
        root = schema.get(key)
        if not root:
            continue
        names = [f["name"] for f in types[root["name"]]["fields"]]
        if len(set(names)) != len(names):
            raise GenerateError(f"GraphQL {root['name']}: duplicate field names")
        if optype == "query":
            fields[optype] = {n: "read" for n in names}
        elif optype == "mutation":
            fields[optype] = {n: graphql_mutation_class(n) for n in names}
        else:
            fields[optype] = {n: "read" for n in names}  # subscriptions only deliver events
    stale = set(GRAPHQL_CLASS_OVERRIDES) - set(fields.get("mutation", {}))
    if stale:
        raise GenerateError(f"GRAPHQL_CLASS_OVERRIDES names unknown mutations: {sorted(stale)}")
    notes.append("github-graphql: " + ", ".join(f"{k} {len(v)}" for k, v in fields.items())
                 + ("" if "subscription" in fields else ", no Subscription type"))
    return {
        "service": "github",
        "kind": "graphql",
        "hosts": [GITHUB_HOST],
        "path": "/graphql",
        "generated_by": GENERATED_BY,
        "sources": [source_entry(src, member)],
        "fields": fields,
    }


# ----------------------------------------------------------------------------- Gmail


def gmail_class(method: str, method_id: str) -> str:
    if method == "GET":
        return "read"
    if method == "DELETE" or method_id.rsplit(".", 1)[1] in GMAIL_DELETE_SUFFIXES:
        return "delete"
    return "write"


def build_gmail(cache: Path, notes: list[str]) -> dict:
    archive, src = fetch("google-api-python-client", cache)
    member = "googleapiclient/discovery_cache/documents/gmail.v1.json"
    doc = json.loads(read_member(archive, src, member))
    root_host = urllib.parse.urlsplit(doc["rootUrl"]).netloc
    if root_host != GMAIL_HOST:
        raise GenerateError(f"Gmail rootUrl host is {root_host}")
    service_path = doc.get("servicePath", "")

    def methods(resources: dict):
        for res in resources.values():
            yield from res.get("methods", {}).values()
            yield from methods(res.get("resources", {}))

    ops: list[dict] = []
    skipped: list[dict] = []
    seen_ids: set[str] = set()
    uploads = 0
    for m in methods(doc.get("resources", {})):
        mid, method = m["id"], m["httpMethod"].upper()
        if mid in seen_ids:
            raise GenerateError(f"Gmail: duplicate method id {mid}")
        seen_ids.add(mid)
        rel = m.get("flatPath") or m["path"]
        if m.get("flatPath") and m["path"] != m["flatPath"]:
            notes.append(f"gmail: {mid} path {m['path']} differs from flatPath {m['flatPath']} (flatPath used)")
        path = "/" + service_path + rel
        cls = gmail_class(method, mid)
        if mid in GMAIL_SKIPPED:
            skipped.append({"action": mid, "method": method, "path": path, "reason": GMAIL_SKIPPED[mid]})
            continue
        base = {"action": mid, "method": method, "class": cls,
                "resource": {"type": "gmail.mailbox", "id": "{userId}"}}
        op = dict(base, path=path)
        if mid in GMAIL_MESSAGE_BODY:
            op["body"] = "gmail.message"
        ops.append(op)
        simple = (m.get("mediaUpload") or {}).get("protocols", {}).get("simple", {}).get("path")
        if simple:
            if not simple.startswith("/"):
                raise GenerateError(f"Gmail {mid}: upload path {simple} is not absolute")
            ops.append(dict(base, path=simple, body="gmail.upload"))
            uploads += 1
        elif m.get("supportsMediaUpload"):
            raise GenerateError(f"Gmail {mid}: supports media upload but has no simple path")
    for op in ops:
        if "userId" not in path_params(op["path"]):
            raise GenerateError(f"Gmail {op['action']}: no {{userId}} in {op['path']}")
    stale = (set(GMAIL_SKIPPED) | GMAIL_MESSAGE_BODY) - seen_ids
    if stale:
        raise GenerateError(f"Gmail rules name unknown methods: {sorted(stale)}")
    notes.append(f"gmail: {len(seen_ids)} methods, {uploads} media-upload paths, {len(skipped)} skipped "
                 f"(revision {doc.get('revision')})")
    return {
        "service": "gmail",
        "hosts": [GMAIL_HOST],
        "generated_by": GENERATED_BY,
        "sources": [source_entry(src, member, api_version=doc.get("version"), revision=doc.get("revision"))],
        "default_resource": {"type": "gmail.api", "id": GMAIL_HOST},
        "operations": sort_ops(ops),
        "skipped": sorted(skipped, key=lambda s: (s["path"], s["method"])),
    }


# ----------------------------------------------------------------------------- Slack


def slack_class(name: str) -> str:
    if name in SLACK_CLASS_OVERRIDES:
        return SLACK_CLASS_OVERRIDES[name]
    parts = name.split(".")
    last = parts[-1]
    word = last[4:5].lower() + last[5:] if last.startswith("bulk") and len(last) > 4 else last

    def has_prefix(w: str, prefixes) -> bool:
        return any(w == p or (w.startswith(p) and w[len(p)].isupper()) for p in prefixes)

    if has_prefix(word, SLACK_DELETE_PREFIXES):
        return "delete"
    if parts[0] in SLACK_READ_FAMILIES or last in SLACK_READ_VERBS or has_prefix(last, SLACK_READ_PREFIXES):
        return "read"
    return "write"


def build_slack(cache: Path, notes: list[str]) -> dict:
    archive, src = fetch("slack-web-api", cache)
    member = "package/dist/methods.js"
    js = read_member(archive, src, member).decode("utf-8")
    calls = re.findall(r"bindApiCall(?:WithOptionalArgument)?\(this,\s*'([^']+)'\)", js)
    names = sorted(set(calls))
    if not names:
        raise GenerateError("Slack: no bindApiCall(...) found in methods.js")
    # Every quoted dotted name in methods.js must be one of the bound methods (nothing bound another way).
    quoted = set(re.findall(r"'([a-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)+)'", js))
    if quoted - set(names):
        raise GenerateError(f"Slack: dotted names not bound via bindApiCall: {sorted(quoted - set(names))}")
    for n in names:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z0-9]+)+", n):
            raise GenerateError(f"Slack: odd method name {n!r}")
    stale = set(SLACK_CLASS_OVERRIDES) - set(names)
    if stale:
        raise GenerateError(f"SLACK_CLASS_OVERRIDES names unknown methods: {sorted(stale)}")
    ops = [{"action": "slack." + n, "method": "*", "path": "/api/" + n, "class": slack_class(n), "body": "slack"}
           for n in names]
    notes.append(f"slack: {len(names)} methods ({len(calls)} bindings)")
    return {
        "service": "slack",
        "hosts": [SLACK_HOST],
        "generated_by": GENERATED_BY,
        "sources": [source_entry(src, member)],
        "default_resource": {"type": "slack.workspace", "id": SLACK_HOST},
        "operations": sort_ops(ops),
    }


# ----------------------------------------------------------------------------- git over HTTPS


def build_github_git(cache: Path, notes: list[str]) -> dict:
    """github.com's git smart-HTTP endpoints, from the hand-written GIT_SMART_HTTP (no download)."""
    ops = []
    for op in GIT_SMART_HTTP:
        if set(path_params(op["path"])) != {"owner", "repo"}:
            raise GenerateError(f"GIT_SMART_HTTP {op['method']} {op['path']}: expected {{owner}}/{{repo}}")
        ops.append(dict(op, resource={"type": "github.repo", "id": "{owner}/{repo}"},
                        strip_suffix={"repo": ".git"}))
    notes.append(f"github-git: {len(ops)} hand-written git smart-HTTP operations on {GIT_HOST} (not a vendor description)")
    return {
        "service": "github",
        "hosts": [GIT_HOST],
        "generated_by": GENERATED_BY,
        "sources": [GIT_SPEC],
        "default_resource": {"type": "github.web", "id": GIT_HOST},
        "operations": sort_ops(ops),
    }


# ----------------------------------------------------------------------------- output / check

BUILDERS = (
    ("github.json", build_github),
    ("github-graphql.json", build_github_graphql),
    ("github-git.json", build_github_git),
    ("gmail.json", build_gmail),
    ("slack.json", build_slack),
)


def render(obj: dict) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def summarize(fname: str, obj: dict, samples: int) -> list[str]:
    lines = []
    if "operations" in obj:
        by: dict[str, list[dict]] = {c: [] for c in CLASSES}
        for op in obj["operations"]:
            by[op["class"]].append(op)
        lines.append(f"{fname}: {len(obj['operations'])} operations: "
                     + ", ".join(f"{c} {len(v)}" for c, v in by.items())
                     + (f"; skipped {len(obj['skipped'])}" if obj.get("skipped") else ""))
        if samples:
            for c, v in by.items():
                step = max(1, len(v) // samples)
                for op in v[::step][:samples]:
                    lines.append(f"    {c:6} {op['method']:6} {op['path']}  {op['action']}")
    else:
        for optype, fs in obj["fields"].items():
            counts = {c: sum(1 for x in fs.values() if x == c) for c in CLASSES}
            lines.append(f"{fname}: {optype} {len(fs)} fields: " + ", ".join(f"{c} {n}" for c, n in counts.items() if n))
            if samples:
                for c in CLASSES:
                    v = sorted(k for k, x in fs.items() if x == c)
                    if v:
                        step = max(1, len(v) // samples)
                        lines.append(f"    {c:6} " + " ".join(v[::step][:samples]))
    return lines


def diff_summary(old_text: str, new_text: str, limit: int = 8) -> list[str]:
    try:
        old = json.loads(old_text)
    except ValueError as e:
        return [f"  committed file is not JSON: {e}"]
    new = json.loads(new_text)
    out = []
    for k in sorted(set(old) | set(new)):
        if k in ("operations", "fields") or old.get(k) == new.get(k):
            continue
        out.append(f"  {k}: {json.dumps(old.get(k))[:160]} → {json.dumps(new.get(k))[:160]}")
    if "operations" in old or "operations" in new:
        def index(ops):
            return {(o.get("host", ""), o["method"], o["path"]): o for o in ops or []}
        a, b = index(old.get("operations")), index(new.get("operations"))
        changes = []
        for key in sorted(set(a) | set(b), key=lambda x: (x[2], x[1], x[0])):
            label = f"{key[1]} {key[2]}" + (f" @{key[0]}" if key[0] else "")
            if key not in b:
                changes.append(f"  - {label}  {a[key]['action']} ({a[key]['class']})")
            elif key not in a:
                changes.append(f"  + {label}  {b[key]['action']} ({b[key]['class']})")
            elif a[key] != b[key]:
                fields = [f for f in sorted(set(a[key]) | set(b[key])) if a[key].get(f) != b[key].get(f)]
                changes.append(f"  ~ {label}  " + "; ".join(
                    f"{f}: {json.dumps(a[key].get(f))} → {json.dumps(b[key].get(f))}" for f in fields))
        if changes:
            out.append(f"  operations: {len(changes)} differ (committed {len(a)}, generated {len(b)}):")
            out.extend("  " + c for c in changes[:limit])
            if len(changes) > limit:
                out.append(f"    ... and {len(changes) - limit} more")
    if "fields" in old or "fields" in new:
        fa, fb = old.get("fields", {}), new.get("fields", {})
        changes = []
        for t in sorted(set(fa) | set(fb)):
            x, y = fa.get(t, {}), fb.get(t, {})
            for n in sorted(set(x) | set(y)):
                if x.get(n) != y.get(n):
                    changes.append(f"  {t}.{n}: {x.get(n)} → {y.get(n)}")
        if changes:
            out.append(f"  fields: {len(changes)} differ:")
            out.extend("  " + c for c in changes[:limit])
            if len(changes) > limit:
                out.append(f"    ... and {len(changes) - limit} more")
    if not out:
        out.append("  same content, different bytes (formatting)")
    return out


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    repo = here.parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and compare with the files in the output directory")
    ap.add_argument("--out", type=Path, default=here, help="output directory (default: %(default)s)")
    ap.add_argument("--cache", type=Path, default=repo / "target" / "catalog-sources",
                    help="download cache (default: %(default)s)")
    ap.add_argument("--samples", type=int, default=0, metavar="N",
                    help="print up to N sample operations of every class per service")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only errors and differences")
    args = ap.parse_args(argv)

    notes: list[str] = []
    outputs: list[tuple[str, str, dict]] = []
    try:
        for fname, build in BUILDERS:
            obj = build(args.cache, notes)
            if "operations" in obj:
                validate(obj, fname)
            outputs.append((fname, render(obj), obj))
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3

    if not args.quiet:
        for n in notes:
            print(n, file=sys.stderr)
        for fname, _, obj in outputs:
            for line in summarize(fname, obj, args.samples):
                print(line, file=sys.stderr)

    if args.check:
        differ = []
        for fname, text, _ in outputs:
            target = args.out / fname
            if not target.exists():
                differ.append((fname, ["  missing"]))
                continue
            current = target.read_text(encoding="utf-8")
            if current != text:
                differ.append((fname, diff_summary(current, text)))
        if differ:
            print(f"catalog check FAILED: {len(differ)} file(s) differ from what {GENERATED_BY} generates:")
            for fname, lines in differ:
                print(f"{args.out / fname}:")
                for line in lines:
                    print(line)
            print(f"Regenerate with: python3 {GENERATED_BY}")
            return 1
        print(f"catalog check ok: {', '.join(f for f, _, _ in outputs)} match the pinned sources")
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    for fname, text, _ in outputs:
        target = args.out / fname
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
        if not args.quiet:
            print(f"wrote {target} ({len(text.encode('utf-8'))} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
