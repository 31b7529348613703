"""Ingest stage: one source file in any supported format -> the canonical dataset.

Canonical columns: id (stable hash of the normalised text), text, label, source, ingested_at.
Labels are mapped to the canonical label set here; a label value that is neither canonical nor
in ``data.label_map`` is a configuration problem, so it stops the run with the values to map.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from finsent.config import DataParams
from finsent.errors import FinsentError

CANONICAL_COLUMNS = ["id", "text", "label", "source", "ingested_at"]
FORMATS = ("csv", "tsv", "jsonl", "parquet", "phrasebank")
_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC and single spaces; case is kept (it carries meaning in finance text)."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def text_id(normalized_text: str) -> str:
    return hashlib.sha256(normalized_text.encode("utf-8")).hexdigest()[:16]


def _decode(raw: bytes, path: Path) -> str:
    for encoding in _ENCODINGS:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise FinsentError(f"{path}: cannot decode as {', '.join(_ENCODINGS)}")  # pragma: no cover (latin-1 never fails)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".jsonl", ".parquet"):
        return suffix[1:]
    if suffix == ".json":
        return "jsonl"
    head = path.read_bytes()[:4096].decode("latin-1")
    first = next((line for line in head.splitlines() if line.strip()), "")
    if "@" in first and first.rpartition("@")[2].strip().lower() in ("negative", "neutral", "positive"):
        return "phrasebank"
    raise FinsentError(f"{path}: cannot tell the format from the name; set data.format to one of {', '.join(FORMATS)}")


def read_phrasebank(path: Path) -> pd.DataFrame:
    """Financial PhraseBank release format: ``sentence@label`` per line, latin-1, CRLF."""
    rows = []
    for number, line in enumerate(_decode(path.read_bytes(), path).splitlines(), start=1):
        if not line.strip():
            continue
        sentence, sep, label = line.rpartition("@")
        if not sep:
            raise FinsentError(f"{path}:{number}: expected 'sentence@label', found no '@'")
        rows.append({"text": sentence, "label": label.strip()})
    return pd.DataFrame(rows, columns=["text", "label"])


def _read_delimited(path: Path, delimiter: str | None) -> pd.DataFrame:
    text = _decode(path.read_bytes(), path)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    return pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False)


def read_source(path: Path, fmt: str, params: DataParams) -> pd.DataFrame:
    """Read one file into a frame with raw ``text`` and ``label`` columns."""
    if not path.exists():
        raise FinsentError(f"data file not found: {path}")
    if path.is_dir():
        raise FinsentError(f"data path is a folder, expected a file: {path}")
    if path.stat().st_size == 0:
        raise FinsentError(f"data file is empty: {path}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise FinsentError(f"unknown data.format '{fmt}'; use one of auto, {', '.join(FORMATS)}")
    try:
        if fmt == "phrasebank":
            return read_phrasebank(path)
        if fmt in ("csv", "tsv"):
            frame = _read_delimited(path, "\t" if fmt == "tsv" else None)
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            frame = pd.read_parquet(path)
    except (ValueError, pd.errors.ParserError, json.JSONDecodeError) as exc:
        raise FinsentError(f"{path}: cannot parse as {fmt}: {str(exc).splitlines()[0]}") from exc
    missing = [c for c in (params.text_column, params.label_column) if c not in frame.columns]
    if missing:
        raise FinsentError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))} "
                           f"(set data.text_column / data.label_column)")
    return frame.rename(columns={params.text_column: "text", params.label_column: "label"})[["text", "label"]]


def map_labels(raw: pd.Series, labels: list[str], label_map: dict, path: Path) -> pd.Series:
    mapping = {str(k).strip().lower(): v for k, v in label_map.items()}
    bad_targets = sorted(set(mapping.values()) - set(labels))
    if bad_targets:
        raise FinsentError(f"data.label_map maps to {', '.join(bad_targets)}, which are not in labels {labels}")
    keys = raw.astype(str).str.strip().str.lower()
    mapped = keys.map(lambda k: mapping.get(k, k))
    unknown = mapped[~mapped.isin(labels)]
    if len(unknown):
        counts = unknown.value_counts()
        shown = ", ".join(f"'{v}' ({n} rows)" for v, n in counts.head(5).items())
        raise FinsentError(f"{path}: unknown label(s) {shown}; known: {', '.join(labels)}; map them in data.label_map")
    return mapped


def ingest(source: Path, params: DataParams, labels: list[str], out: Path) -> dict:
    """Read ``source``, normalise text, map labels, write the canonical parquet; return counts."""
    source = Path(source)
    frame = read_source(source, params.format, params)
    if frame.empty:
        raise FinsentError(f"data file has no rows: {source}")
    text = frame["text"].astype("string").fillna("").map(normalize_text)
    canonical = pd.DataFrame({
        "id": text.map(text_id),
        "text": text,
        "label": map_labels(frame["label"], labels, params.label_map, source),
        "source": source.name,
        "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })[CANONICAL_COLUMNS]
    out.parent.mkdir(parents=True, exist_ok=True)
    canonical.to_parquet(out, index=False)
    return {"rows_read": int(len(frame)), "source": str(source),
            "label_counts": {k: int(v) for k, v in canonical["label"].value_counts().sort_index().items()}}
