#!/usr/bin/env python3
"""Parses a Prometheus text exposition on stdin with prometheus_client's own parser and
prints the families as JSON on stdout. Exits 2 when prometheus_client is missing, 1 when
the text does not parse. Used by tests/tests/stats.rs."""
import json
import math
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # the test fails (not skips) on this
    print(f"prometheus_client is not installed: {e}", file=sys.stderr)
    sys.exit(2)

text = sys.stdin.read()
try:
    out = []
    for fam in text_string_to_metric_families(text):
        out.append(
            {
                "name": fam.name,
                "type": fam.type,
                "documentation": fam.documentation,
                "unit": fam.unit,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": s.value if math.isfinite(s.value) else str(s.value)}
                    for s in fam.samples
                ],
            }
        )
except Exception as e:  # noqa: BLE001 - any parse failure fails the test
    print(f"the exposition does not parse: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(out, sys.stdout)
