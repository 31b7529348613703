"""Data drift: how far a new accepted dataset is from the one the current champion was trained on.

The validate stage writes a profile of the accepted dataset (label shares, a text-length histogram
on fixed bins, word counts); every registered run carries it, so the champion's profile is the
reference. Figures: population stability index (PSI) of the label shares and of the length
histogram, and the out-of-vocabulary rate (share of the new words, counted by occurrence, that
the reference never saw). Over a threshold is a warning or a failure (``validation.drift.action``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from finsent.config import DriftParams

LENGTH_BINS = [0, 40, 60, 80, 100, 130, 160, 200, 300, 500, math.inf]  # characters
VOCABULARY_SIZE = 20_000  # most frequent words kept in a profile
_WORD = re.compile(r"[a-z]+")
_EPSILON = 1e-4  # stands in for an empty bin in the PSI's logarithm


def profile(frame: pd.DataFrame, labels: list[str]) -> dict:
    lengths = frame["text"].str.len()
    binned = pd.cut(lengths, LENGTH_BINS, right=False).value_counts(sort=False)
    words = Counter(word for text in frame["text"] for word in _WORD.findall(text.lower()))
    return {"rows": int(len(frame)),
            "label_shares": {label: float((frame["label"] == label).mean()) for label in labels},
            "length_bins": [b if b != math.inf else None for b in LENGTH_BINS],
            "length_shares": [float(v) / max(len(frame), 1) for v in binned.tolist()],
            "length_mean": float(lengths.mean()), "words_total": sum(words.values()),
            "vocabulary": dict(words.most_common(VOCABULARY_SIZE))}


def psi(reference: list[float], current: list[float]) -> float:
    """Population stability index: sum of (p - q) * ln(p / q); 0 = same, > 0.2 is commonly 'shifted'."""
    total = 0.0
    for p, q in zip(reference, current):
        p, q = max(p, _EPSILON), max(q, _EPSILON)
        total += (q - p) * math.log(q / p)
    return total


def compare(reference: dict, current: dict, params: DriftParams) -> dict:
    labels = list(reference["label_shares"])
    figures = {
        "label_psi": psi([reference["label_shares"][k] for k in labels],
                         [current["label_shares"].get(k, 0.0) for k in labels]),
        "length_psi": psi(reference["length_shares"], current["length_shares"]),
        "oov_rate": (sum(n for w, n in current["vocabulary"].items() if w not in reference["vocabulary"])
                     / max(sum(current["vocabulary"].values()), 1)),
    }
    limits = {"label_psi": params.max_label_psi, "length_psi": params.max_length_psi,
              "oov_rate": params.max_oov_rate}
    checks = [{"check": name, "observed": round(value, 4), "threshold": limits[name],
               "drifted": limits[name] is not None and value > limits[name]} for name, value in figures.items()]
    return {"reference_rows": reference["rows"], "current_rows": current["rows"], "action": params.action,
            "drifted": any(c["drifted"] for c in checks), "checks": checks,
            "label_shares": {"reference": reference["label_shares"], "current": current["label_shares"]},
            "length_mean": {"reference": reference["length_mean"], "current": current["length_mean"]}}


def describe(report: dict) -> str:
    return "; ".join(f"{c['check']} {c['observed']} (max {c['threshold']})" for c in report["checks"])


def summary_line(report: dict) -> str:
    """What a run prints about drift: 'vs <champion>: <checks>' (+ ' -- DRIFTED'), or why nothing was compared."""
    if not report["compared"]:
        return report["why"]
    return f"vs {report['reference']}: {describe(report)}" + (" -- DRIFTED" if report["drifted"] else "")


def check_drift(reference: dict | None, reference_name: str, current_profile: Path, params: DriftParams,
                out: Path) -> dict:
    """Compare the current profile with the reference (None: nothing to compare with) and write the report."""
    current = json.loads(current_profile.read_text())
    if reference is None:
        report = {"compared": False, "reference": reference_name, "drifted": False,
                  "why": f"no data profile for {reference_name}"}
    else:
        report = {"compared": True, "reference": reference_name, **compare(reference, current, params)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def stop_reason(report: dict) -> str | None:
    """The message to stop the run with, when drift is over a threshold and the action is 'fail'."""
    if not (report["drifted"] and report["action"] == "fail"):
        return None
    return (f"data drift against {report['reference']}: {describe(report)} "
            f"(validation.drift.action = fail; raise a threshold, or set action: warn to train anyway)")
