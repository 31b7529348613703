"""Split stage: deterministic stratified train / validation / test split by seed.

Rows arrive de-duplicated by text id (validate stage), so a sentence can never sit in two splits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from finsent.config import SplitParams
from finsent.errors import FinsentError

SPLITS = ("train", "val", "test")
_KEEP = ["id", "text", "label", "source"]


def _stratified(frame: pd.DataFrame, size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        rest, part = train_test_split(frame, test_size=size, random_state=seed, stratify=frame["label"])
    except ValueError as exc:
        raise FinsentError(f"cannot split {len(frame)} rows stratified by label ({exc}); "
                           f"add data or lower split.test_size / split.val_size") from exc
    return rest, part


def split(accepted: Path, params: SplitParams, out_dir: Path) -> dict:
    frame = pd.read_parquet(accepted, columns=_KEEP).sort_values("id", kind="stable").reset_index(drop=True)
    rest, test = _stratified(frame, params.test_size, params.seed)
    train, val = _stratified(rest, params.val_size / (1 - params.test_size), params.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in zip(SPLITS, (train, val, test)):
        part.sort_values("id", kind="stable").to_parquet(out_dir / f"{name}.parquet", index=False)
        counts[name] = {k: int(v) for k, v in part["label"].value_counts().sort_index().items()}
    (out_dir / "split.json").write_text(json.dumps({"seed": params.seed, "counts": counts}, indent=2))
    return counts
