"""The model card of a registered version: what a model-risk reviewer reads before approving it.

Built only from what the run measured and recorded (the ingest, validation, training, evaluation,
comparison and gate reports, the test split and its predictions), so every figure in it can be traced
back with `finsent lineage`. Written as Markdown and HTML next to the reports, logged with the run and set
as the model version's description; `finsent card` prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from finsent import layout
from finsent.config import SPLITS
from finsent.data.validate import escaped

LENGTH_BUCKETS = 3  # text-length ranges (by word count, equal-sized) whose error rates the card compares
EXAMPLES = 5  # misclassified test sentences shown, the most confident mistakes first


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _read(root: Path, path: str) -> dict:
    file = root / path
    return json.loads(file.read_text()) if file.is_file() else {}


def _split_sizes(root: Path, labels: list[str]) -> list[str]:
    lines = [_row("split", "rows", *labels), _row("---", "---:", *["---:"] * len(labels))]
    for name in SPLITS:
        file = root / layout.SPLIT_DIR / f"{name}.parquet"
        if file.is_file():
            counts = pd.read_parquet(file, columns=["label"])["label"].value_counts()
            lines.append(_row(name, int(counts.sum()), *[int(counts.get(label, 0)) for label in labels]))
    return lines


def limitations(root: Path, labels: list[str], metrics: dict) -> list[str]:
    """Where the model is weakest on the test split: the class with the lowest recall, the error rate per
    text-length range, and the most confident mistakes."""
    predictions = root / layout.TEST_PREDICTIONS
    if not predictions.is_file():
        return ["No test predictions were recorded."]
    scored = pd.read_parquet(predictions).merge(
        pd.read_parquet(root / layout.TEST_SPLIT, columns=["id", "text"]), on="id", how="left")
    weakest = min(labels, key=lambda name: metrics.get(f"recall_{name}", 1.0))
    lines = [f"- Lowest recall: **{weakest}** ({metrics.get(f'recall_{weakest}', float('nan')):.3f}); "
             f"its most frequent wrong label: "
             + (scored[(scored["label"] == weakest) & (scored["predicted"] != weakest)]["predicted"].mode().tolist()
                or ["none"])[0] + "."]
    words = scored["text"].fillna("").str.split().str.len()
    scored["wrong"] = scored["label"] != scored["predicted"]
    if len(scored) >= LENGTH_BUCKETS and words.nunique() > 1:
        buckets = pd.qcut(words, LENGTH_BUCKETS, duplicates="drop")
        rates = scored.groupby(buckets, observed=True)["wrong"].agg(["mean", "size"])
        lines += ["", "Error rate by text length (words):", "", _row("words", "rows", "error rate"),
                  _row("---", "---:", "---:")]
        lines += [_row(f"{int(interval.left) + 1}–{int(interval.right)}", int(row["size"]), f"{row['mean']:.3f}")
                  for interval, row in rates.iterrows()]
    mistakes = scored[scored["wrong"]].copy()
    if len(mistakes):
        mistakes["confidence"] = [row[f"prob_{row['predicted']}"] for _, row in mistakes.iterrows()]
        lines += ["", f"Most confident mistakes (of {len(mistakes)} on {len(scored)} test rows):", "",
                  _row("text", "true", "predicted", "confidence"), _row("---", "---", "---", "---:")]
        for _, row in mistakes.sort_values("confidence", ascending=False).head(EXAMPLES).iterrows():
            text = escaped(row["text"], 160).replace("|", "\\|")
            lines.append(_row(text, row["label"], row["predicted"], f"{row['confidence']:.3f}"))
    return lines


def model_card(root: Path, model_name: str, version: str, labels: list[str], evaluation_report: str) -> str:
    """The card as Markdown. ``evaluation_report`` (metrics, champion comparison, gates, decision) is its
    second half."""
    train, ingest = _read(root, layout.TRAIN_REPORT), _read(root, layout.INGEST_REPORT)
    accounting = _read(root, layout.VALIDATION_REPORT).get("accounting", {})
    metrics = _read(root, layout.METRICS)
    base = train.get("base_model", {})
    lines = [f"{layout.CARD_HEADING}{model_name} v{version}", "",
             f"Labels English finance sentences (news, filings, posts) as {', '.join(labels)}, with a probability "
             f"per label. Method **{train.get('method', '?')}** on the frozen base `{base.get('base', '?')}` "
             f"({base.get('revision', '?')}, weights sha256 `{str(base.get('weights_sha256', '?'))[:16]}…`): "
             f"{train.get('trainable_params', 0):,} trainable parameters ({train.get('trainable_pct', 0):.2f} % of "
             f"{train.get('total_params', 0):,}), best epoch {train.get('best_epoch', '?')}.", "",
             "Not for: text in other languages or domains than the training data below, or decisions without a "
             "person reviewing them; the figures below hold for data like the test split only.", "",
             "## Training data", "", _row("source", "sha256", "rows read"), _row("---", "---", "---:")]
    lines += [_row(f["source"], f"`{f['sha256'][:16]}…`", f["rows_read"]) for f in ingest.get("files", [])]
    lines += ["", f"Read {accounting.get('rows_read', '?')} rows = accepted {accounting.get('rows_accepted', '?')} + "
                  f"quarantined {accounting.get('rows_quarantined', '?')} + duplicates merged "
                  f"{accounting.get('duplicates_merged', '?')}.", "", *_split_sizes(root, labels), "",
              "## Known limitations (measured on the test split)", "", *limitations(root, labels, metrics), "",
              "## Evaluation, comparison, gates and decision", ""]
    lines += evaluation_report.split("\n", 2)[2:] if evaluation_report.startswith("# ") else [evaluation_report]
    return "\n".join(lines).rstrip() + "\n"


def write_card(root: Path, card: str) -> Path:
    """reports/model_card.md and its HTML rendering -> the Markdown file."""
    import mistune

    markdown = root / layout.MODEL_CARD
    markdown.write_text(card, encoding="utf-8")
    body = mistune.create_markdown(escape=True, plugins=["table"])(card)
    markdown.with_suffix(".html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Model card</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{border:1px solid #ccc;"
        f"padding:2px 6px}}table{{border-collapse:collapse}}</style>\n{body}", encoding="utf-8")
    return markdown
