#!/usr/bin/env python3
"""Independent check of auditstream's published vectors, in Python with the standard library only.

It re-implements RFC 8785 (JCS) and the chain hash rule from their specifications, not from the Rust
code, and checks every vector in this folder:

* canonical.json   JSON text -> canonical text -> SHA-256, number formatting, rejected inputs
* chain.jsonl      a processed chain: each event's hash recomputes and prevHash links to the previous

Run: python3 schemas/testdata/verify_vectors.py   (exit 0 when every vector verifies)
"""

import hashlib
import json
import math
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENESIS = "0" * 64


class NotCanonicalizable(ValueError):
    pass


def es_number(x):
    """ECMAScript Number.prototype.toString for a finite double (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(x):
        raise NotCanonicalizable("NaN and Infinity have no canonical form")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + es_number(-x)
    # Shortest round-trip digits and decimal exponent: x = 0.DIGITS * 10^n
    mantissa, _, exp = repr(x).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    n = len(int_part.lstrip("0")) + (int(exp) if exp else 0)
    if not int_part.lstrip("0"):
        n = (int(exp) if exp else 0) - (len(frac_part) - len(frac_part.lstrip("0")))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(e)}"


def es_string(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(value, omit=None, depth=0, key=None):
    """Canonical text. omit=(outer, inner) drops member inner of top-level member outer."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if float(value) != value or int(float(value)) != value:
            raise NotCanonicalizable(f"integer {value} is not exactly representable as a double")
        return es_number(float(value))
    if isinstance(value, float):
        return es_number(value)
    if isinstance(value, str):
        return es_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v, omit, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        items = value.items()
        if omit and depth == 1 and key == omit[0]:
            items = [(k, v) for k, v in items if k != omit[1]]
        items = sorted(items, key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(es_string(k) + ":" + jcs(v, omit, depth + 1, k) for k, v in items) + "}"
    raise TypeError(type(value))


def event_hash(event):
    """SHA-256 of the canonical event without integrity.hash."""
    return hashlib.sha256(jcs(event, ("integrity", "hash")).encode("utf-8")).hexdigest()


def main():
    failures = 0
    checked = 0
    vectors = json.loads((HERE / "canonical.json").read_text(encoding="utf-8"))
    for case in vectors["cases"]:
        got = jcs(json.loads(case["json"]))
        digest = hashlib.sha256(got.encode("utf-8")).hexdigest()
        checked += 1
        if got != case["canonical"] or digest != case["sha256"]:
            failures += 1
            print(f"FAIL {case['name']}: got {got!r} / {digest}")
    for num in vectors["numbers"]:
        x = struct.unpack(">d", bytes.fromhex(num["ieee754"]))[0]
        checked += 1
        if es_number(x) != num["canonical"]:
            failures += 1
            print(f"FAIL number {num['ieee754']}: got {es_number(x)} want {num['canonical']}")
    for case in vectors["rejected"]:
        checked += 1
        try:
            jcs(json.loads(case["json"]))
            failures += 1
            print(f"FAIL {case['name']}: was canonicalized but must be rejected")
        except NotCanonicalizable:
            pass

    prev = None
    for line_no, line in enumerate((HERE / "chain.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        event = json.loads(line)
        integrity = event["integrity"]
        checked += 1
        want_prev = GENESIS if prev is None else prev
        if event_hash(event) != integrity["hash"]:
            failures += 1
            print(f"FAIL chain.jsonl line {line_no}: hash does not recompute")
        if integrity["prevHash"] != want_prev:
            failures += 1
            print(f"FAIL chain.jsonl line {line_no}: prevHash does not link")
        prev = integrity["hash"]

    print(f"vectors: {checked - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
