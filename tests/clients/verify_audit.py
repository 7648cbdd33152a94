#!/usr/bin/env python3
"""Independent verifier of an agentgate audit log's hash chain (stdlib only).

    verify_audit.py AUDIT_DB [--export FILE]

Recomputes every record's hash from the genesis value, the way docs/audit-format.md
describes it:

    genesis   = SHA-256("agentgate-audit-v1:" + log_id)        (log_id in meta)
    hash[seq] = SHA-256(hash[seq-1] || record bytes as stored)  (hex in records.hash)

and checks that `seq` runs 1, 2, 3... without gaps, that each record says its own seq,
and that each record is already in canonical form (json.dumps with sorted keys, compact
separators, ensure_ascii=False gives back the same bytes). With --export, the output of
`agentgate audit export` must carry the same hashes and, re-encoded canonically, the
same record bytes.

Prints "ok N" (N records) and exits 0, or "BAD seq S: why" and exits 1. Signed
checkpoints are not checked here (that needs an Ed25519 implementation).
"""

import hashlib
import json
import sqlite3
import sys


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bad(seq, why):
    print(f"BAD seq {seq}: {why}")
    sys.exit(1)


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--export"):
        print(__doc__, file=sys.stderr)
        return 2
    db = argv[1]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (log_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    prev = hashlib.sha256(b"agentgate-audit-v1:" + log_id.encode("utf-8")).digest()
    expected = 1
    stored = {}
    for seq, record, stored_hash in conn.execute(
        "SELECT seq, record, hash FROM records ORDER BY seq"
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
    conn.close()

    if len(argv) == 4:
        seen = 0
        with open(argv[3], encoding="utf-8") as f:
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
