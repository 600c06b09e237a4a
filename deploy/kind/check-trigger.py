"""Find the lambda.trigger CloudEvent in the capture sink's log and check it.

Reads the sink's log lines (one JSON object per request: path, lowercased
headers, body) on stdin. Exit 0: a trigger for pod-restart of
shop/cart-7f9c6d5b8-x2k4q arrived (printed); 1: a trigger arrived but is not
that one; 2: no trigger yet. Used by e2e.sh and by tests/packaging.
"""

from __future__ import annotations

import json
import sys

TRIGGER_TYPE = "io.homelab.agent-sre.lambda.trigger"
EXPECTED = {"lambda_function": "pod-restart", "name": "cart-7f9c6d5b8-x2k4q", "namespace": "shop"}


def main() -> int:
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue  # not a captured request (e.g. a Python warning)
        headers = request.get("headers", {})
        if headers.get("ce-type") != TRIGGER_TYPE:
            continue
        data = json.loads(request["body"])
        params = data.get("parameters") or {}
        problems = []
        if headers.get("ce-specversion") != "1.0":
            problems.append(f"ce-specversion is {headers.get('ce-specversion')!r}")
        if data.get("lambda_function") != EXPECTED["lambda_function"]:
            problems.append(
                f"lambda_function is {data.get('lambda_function')!r}, expected {EXPECTED['lambda_function']}"
            )
        if (params.get("name"), params.get("namespace")) != (EXPECTED["name"], EXPECTED["namespace"]):
            problems.append(f"parameters are {params}, expected {EXPECTED['namespace']}/{EXPECTED['name']}")
        if problems:
            print("trigger received but wrong: " + "; ".join(problems), file=sys.stderr)
            return 1
        print(f"trigger: {data['lambda_function']} {params} (by {data.get('triggered_by')}, id {headers.get('ce-id')})")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
