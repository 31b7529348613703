"""Read a batch of unlabelled finance text (a file or a drop folder) and score it with a model bundle.

Rows are never dropped silently: a row whose text is missing or blank is not scored and is kept in
``skipped`` with the reason, so rows read = rows scored + rows skipped.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finsent.config import NormalizeParams, SourceSpec
from finsent.data.ingest import normalize_text, text_id
from finsent.data.readers import decode, detect_format, load_bytes, read_delimited, read_jsonl
from finsent.data.sources import source_files
from finsent.errors import FinsentError


def _read_file(path: Path) -> pd.DataFrame:
    raw, _ = load_bytes(path)
    fmt = detect_format(path, raw)
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(raw))
    text = decode(raw, "auto", path)
    if fmt == "jsonl":
        return read_jsonl(text, path)
    if fmt in ("csv", "tsv"):
        return read_delimited(text, "\t" if fmt == "tsv" else "auto", path)
    # one sentence per line (PhraseBank-like text without labels)
    return pd.DataFrame({"text": [line for line in text.splitlines() if line.strip()]})


def read_batch(source: Path, text_column: str) -> pd.DataFrame:
    """Every row of the file (or of every file in the folder), with its ``source`` and record number."""
    frames = []
    for path, name in source_files(SourceSpec(path=str(source))):
        frame = _read_file(path)
        if text_column not in frame.columns:
            raise FinsentError(f"{path}: no '{text_column}' column (found {', '.join(map(str, frame.columns))}); "
                               f"set monitor.text_column")
        frames.append(frame.assign(source=name, source_record=range(1, len(frame) + 1)))
    batch = pd.concat(frames, ignore_index=True)
    if batch.empty:
        raise FinsentError(f"{source}: no rows to score")
    return batch


def score(batch: pd.DataFrame, bundle_dir: Path, text_column: str, batch_size: int,
          model_version: str, normalize: NormalizeParams) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """-> (scored rows, skipped rows with reason, throughput figures)."""
    from finsent.onnx_model import load_scorer

    text = batch[text_column].map(lambda t: normalize_text(t, normalize) if isinstance(t, str) else None)
    blank = text.isna() | (text.str.len() == 0)
    skipped = batch[blank].assign(reason="text_missing_or_blank")
    rows = batch[~blank].assign(**{text_column: text[~blank]})
    scorer = load_scorer(bundle_dir)  # the backend the version was registered to serve with
    started = time.perf_counter()
    probabilities = scorer.predict_proba(rows[text_column].tolist(), batch_size=batch_size)
    seconds = time.perf_counter() - started
    labels = scorer.labels
    scored = rows.assign(
        id=rows[text_column].map(text_id),
        label=[labels[i] for i in probabilities.argmax(axis=1)],
        **{f"prob_{name}": probabilities[:, i] for i, name in enumerate(labels)},
        confidence=probabilities.max(axis=1) if len(rows) else np.array([]),
        model_version=model_version,
    )
    figures = {"rows_read": len(batch), "rows_scored": len(scored), "rows_skipped": len(skipped),
               "scoring_seconds": round(seconds, 3), "rows_per_second": round(len(scored) / max(seconds, 1e-9), 1),
               "backend": scorer.backend, "backend_note": scorer.note}
    return scored, skipped, figures
