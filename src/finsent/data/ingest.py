"""Ingest stage: the files of the source manifest -> one canonical dataset.

Canonical columns: id (stable hash of the normalised text), text, label, source, ingested_at,
plus source_record (the record's number in its file) so a quarantined row can be found again.
Labels go through the source's label map; a label still outside the label set is kept as read
(the validate stage quarantines that row), unless so many rows of one source have one that a
mapping must be missing: then the run stops and names the values to map.
``ingested_at`` is when the file's content was first ingested (a ledger keyed by content hash),
so re-ingesting an unchanged drop folder yields the same dataset, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from finsent.config import DataParams, NormalizeParams
from finsent.data.readers import read_source
from finsent.data.sources import sha256_file, spec_of
from finsent.errors import FinsentError

CANONICAL_COLUMNS = ["id", "text", "label", "source", "ingested_at"]
INGESTED_COLUMNS = CANONICAL_COLUMNS + ["source_record"]
_WHITESPACE = re.compile(r"\s+")
# Invisible format characters: zero-width spaces / joiners, bidirectional overrides and isolates (they can make a
# sentence display differently from what the model reads), a byte-order mark inside the text. Validate
# quarantines rows holding them unless data.normalize.strip_format_characters drops them here.
FORMAT_CHARACTERS = "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
_FORMAT_CHARACTERS = re.compile(FORMAT_CHARACTERS)


DEFAULT_NORMALIZE = NormalizeParams()


def normalize_text(text: str, params: NormalizeParams = DEFAULT_NORMALIZE) -> str:
    """Explicit, configurable normalisation: unicode form, whitespace runs, optional lowercasing."""
    if params.unicode_form:
        text = unicodedata.normalize(params.unicode_form, text)
    if params.strip_format_characters:
        text = _FORMAT_CHARACTERS.sub("", text)
    if params.collapse_whitespace:
        text = _WHITESPACE.sub(" ", text).strip()
    return text.lower() if params.lowercase else text


def text_id(normalized_text: str) -> str:
    return hashlib.sha256(normalized_text.encode("utf-8")).hexdigest()[:16]


def map_labels(raw: pd.Series, labels: list[str], label_map: dict, max_unknown_share: float,
               where: str) -> pd.Series:
    """Canonical labels; values outside the label set stay as read, for the validate stage to quarantine."""
    mapping = {str(k).strip().lower(): v for k, v in label_map.items()}
    bad_targets = sorted(set(mapping.values()) - set(labels))
    if bad_targets:
        raise FinsentError(f"data.label_map maps to {', '.join(bad_targets)}, which are not in labels {labels}")
    mapped = raw.map(lambda v: None if pd.isna(v) else mapping.get(v.lower(), v.lower() if v.lower() in labels else v))
    unknown = mapped[~mapped.isin(labels)]
    if len(unknown) > max_unknown_share * len(mapped):
        counts = unknown.fillna("<missing>").value_counts()
        shown = ", ".join(f"'{v}' ({n} rows)" for v, n in counts.head(5).items())
        raise FinsentError(f"{where}: {len(unknown)} of {len(mapped)} labels are not in {labels}: {shown}; "
                           f"map them in data.label_map (over data.max_unknown_label_share="
                           f"{max_unknown_share} is a missing mapping, not bad rows)")
    return mapped


def _load_ledger(path: Path | None) -> dict:
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def ingest(files: list[dict], labels: list[str], params: DataParams, out: Path,
           report_out: Path | None = None, ledger: Path | None = None) -> dict:
    """Read every manifest entry (see sources.py), normalise, map labels, write the canonical parquet."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    seen = _load_ledger(ledger)
    frames, report = [], []
    for entry in files:
        if entry["duplicate_of"]:
            report.append({"source": entry["source"], "sha256": entry["sha256"], "rows_read": 0,
                           "skipped": f"same content as {entry['duplicate_of']}"})
            continue
        path, spec = Path(entry["path"]), spec_of(entry)
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise FinsentError(f"{path} changed or vanished after the sources stage hashed it; run again")
        raw, facts = read_source(path, spec, params.max_file_mb * 2**20)
        text = raw["text"].map(lambda t: None if pd.isna(t) else normalize_text(t, params.normalize))
        new = entry["sha256"] not in seen
        first = seen.setdefault(entry["sha256"], {"first_ingested_at": now, "source": entry["source"]})
        frames.append(pd.DataFrame({
            "id": text.map(lambda t: text_id(t if isinstance(t, str) else "")),
            "text": text,
            "label": map_labels(raw["label"], labels, spec.label_map, params.max_unknown_label_share, str(path)),
            "source": entry["source"],
            "ingested_at": first["first_ingested_at"],
            "source_record": raw["record"],
        }))
        report.append({"source": entry["source"], "path": entry["path"], "sha256": entry["sha256"],
                       "rows_read": len(raw),
                       "first_ingested_at": first["first_ingested_at"], "new": new,
                       **facts})
    canonical = pd.concat(frames, ignore_index=True)[INGESTED_COLUMNS]
    out.parent.mkdir(parents=True, exist_ok=True)
    canonical.to_parquet(out, index=False)
    summary = {"rows_read": len(canonical), "files": report,
               "label_counts": {str(k): int(v) for k, v in canonical["label"].value_counts().sort_index().items()}}
    if report_out is not None:
        report_out.parent.mkdir(parents=True, exist_ok=True)
        report_out.write_text(json.dumps(summary, indent=2) + "\n")
    if ledger is not None:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        ledger.write_text(json.dumps(seen, indent=2) + "\n")
    return summary
