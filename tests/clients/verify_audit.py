#!/usr/bin/env python3
"""Independent verifier of an agentgate audit log's hash chain (stdlib only).

    verify_audit.py AUDIT_DB [--export FILE] [--archive DIR]

Recomputes every record's hash from the genesis value, the way docs/audit-format.md
describes it:

    genesis   = SHA-256("agentgate-audit-v1:" + log_id)        (log_id in meta)
    hash[seq] = SHA-256(hash[seq-1] || record bytes as stored)  (hex in records.hash)

and checks that `seq` runs 1, 2, 3... without gaps, that each record says its own seq,
and that each record is already in canonical form (json.dumps with sorted keys, compact
separators, ensure_ascii=False gives back the same bytes). With --export, the output of
`agentgate audit export` must carry the same hashes and, re-encoded canonically, the
same record bytes.

The log's sealed segments (AUDIT_DB's `<stem>.segments/` and, with --archive, the
archive's `<log id>/`) come first, in order of their range; each file's meta base_seq /
base_hash must be where the chain before it ended, and the active file counts only its
records after that.

Prints "ok N" (N records) and exits 0, or "BAD seq S: why" and exits 1. Signed
checkpoints are not checked here (that needs an Ed25519 implementation).
"""

import hashlib
import json
import os
import sqlite3
import sys


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bad(seq, why):
    print(f"BAD seq {seq}: {why}")
    sys.exit(1)


def segments(db, archive, log_id):
    """Sealed segment files by name (their range), local ones first on a tie."""
    stem = os.path.splitext(db)[0]
    found = {}
    for d in [os.path.join(archive, log_id)] if archive else []:
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if name.endswith(".db"):
                found[name] = os.path.join(d, name)
    local = stem + ".segments"
    for name in os.listdir(local) if os.path.isdir(local) else []:
        if name.endswith(".db"):
            found[name] = os.path.join(local, name)
    return [found[n] for n in sorted(found)]


def main(argv):
    args = argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    db, rest, export, archive = args[0], args[1:], None, None
    while rest:
        flag, value, rest = rest[0], rest[1] if len(rest) > 1 else None, rest[2:]
        if flag == "--export" and value:
            export = value
        elif flag == "--archive" and value:
            archive = value
        else:
            print(__doc__, file=sys.stderr)
            return 2
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (log_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    conn.close()
    prev = hashlib.sha256(b"agentgate-audit-v1:" + log_id.encode("utf-8")).digest()
    expected = 1
    stored = {}
    for path in segments(db, archive, log_id) + [db]:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        if meta.get("log_id") != log_id:
            bad(expected, f"{path} belongs to another log")
        base = int(meta.get("base_seq", "0"))
        if path == db and base < expected - 1:
            base = expected - 1  # a seal under way: rows up to here are in a sealed file
        elif base != expected - 1:
            bad(expected, f"{path} starts after seq {base}, not {expected - 1}")
        elif base > 0 and meta.get("base_hash") != prev.hex():
            bad(expected, f"{path} does not link to the file before it")
        for seq, record, stored_hash in conn.execute(
            "SELECT seq, record, hash FROM records WHERE seq > ? ORDER BY seq", (base,)
        ):
            if seq != expected:
                bad(expected, f"record {expected} is missing (the next record is {seq})")
            raw = record.encode("utf-8") if isinstance(record, str) else bytes(record)
            try:
                value = json.loads(raw)
            except ValueError as e:
                bad(seq, f"not valid JSON: {e}")
            if value.get("seq") != seq:
                bad(seq, f"record says it is seq {value.get('seq')}")
            digest = hashlib.sha256(prev + raw).digest()
            if digest.hex() != str(stored_hash).lower():
                bad(seq, "does not hash to its stored hash")
            if canonical(value).encode("utf-8") != raw:
                bad(seq, "not in canonical form")
            stored[seq] = (digest.hex(), raw)
            prev = digest
            expected += 1
        if path != db and str(expected - 1) != meta.get("last_seq"):
            bad(expected, f"{path} ends at {expected - 1}, sealed at {meta.get('last_seq')}")
        conn.close()

    if export:
        seen = 0
        with open(export, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                item = json.loads(line)
                record = item["record"]
                seq = record["seq"]
                if seq not in stored:
                    bad(seq, "exported but not in the log")
                digest, raw = stored[seq]
                if item["hash"] != digest:
                    bad(seq, "exported hash differs from the recomputed one")
                if canonical(record).encode("utf-8") != raw:
                    bad(seq, "exported record does not re-encode to the logged bytes")
                seen += 1
        if seen != len(stored):
            bad(0, f"export has {seen} records, the log {len(stored)}")

    print(f"ok {expected - 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
