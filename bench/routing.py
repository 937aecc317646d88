"""Routing quality: `meshctl execute`'s choice of role over a labelled set of task phrasings.

Each line of routing_set.jsonl is {"task": ..., "role": ...}; an ambiguous task is labelled
`anchor` (it should go to the anchor, who re-dispatches it). Prints the accuracy per role
and overall, every miss, and how many misses went to a wrong specialist rather than to the
anchor. Target: >= 95 % overall and no wrong specialist (tests/test_routing.py asserts it).

    python bench/routing.py [SET]
"""

import json
import os
import sys

from meshtools.core import roles
from meshtools.mesh import routing

TARGET = 0.95
SET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "routing_set.jsonl")


def load(path: str = SET) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate(cases: list[dict], rules: dict | None = None) -> dict:
    """{total, right, accuracy, per_role: {role: [right, total]}, misses: [...],
    wrong_specialist: n} for the cases routed with rules (default: the packaged roles')."""
    rules = routing.rules_of(roles.load()) if rules is None else rules
    per_role, misses = {}, []
    for case in cases:
        got = routing.route(case["task"], rules)
        tally = per_role.setdefault(case["role"], [0, 0])
        tally[1] += 1
        if got.role == case["role"]:
            tally[0] += 1
        else:
            misses.append({**case, "got": got.role, "reason": got.reason})
    right = sum(r for r, _ in per_role.values())
    return {"total": len(cases), "right": right, "accuracy": right / max(1, len(cases)),
            "per_role": per_role, "misses": misses,
            "wrong_specialist": sum(1 for m in misses if m["got"] != routing.ANCHOR)}


def main(path: str = SET) -> int:
    report = evaluate(load(path))
    print(f"routing accuracy over {report['total']} labelled tasks (target >= {TARGET:.0%}, "
          "no wrong specialist)")
    for role, (right, total) in sorted(report["per_role"].items()):
        print(f"  {role:10s} {right:3d}/{total:<3d} {right / total:6.1%}")
    print(f"  {'overall':10s} {report['right']:3d}/{report['total']:<3d} "
          f"{report['accuracy']:6.1%}")
    for miss in report["misses"]:
        print(f"  miss: {miss['task']!r}: {miss['role']} -> {miss['got']} ({miss['reason']})")
    ok = report["accuracy"] >= TARGET and not report["wrong_specialist"]
    print(f"wrong specialist: {report['wrong_specialist']}; {'OK' if ok else 'UNDER TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
