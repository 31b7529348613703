"""Gate: the rules a candidate must pass before it may become champion.

Each check reports its observed value and threshold, so a refusal explains itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from finsent.config import GateParams


def check_gates(metrics: dict, params: GateParams) -> dict:
    checks = [{"gate": "min_macro_f1", "metric": "macro_f1", "observed": metrics["macro_f1"],
               "threshold": params.min_macro_f1, "passed": metrics["macro_f1"] >= params.min_macro_f1}]
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def gate(metrics_path: Path, params: GateParams, out: Path) -> dict:
    verdict = check_gates(json.loads(Path(metrics_path).read_text()), params)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(verdict, indent=2))
    return verdict


def describe(verdict: dict) -> str:
    return "; ".join(f"{c['metric']} {c['observed']:.3f} {'>=' if c['passed'] else '<'} {c['threshold']}"
                     for c in verdict["checks"])
