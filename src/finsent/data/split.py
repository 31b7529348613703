"""Split stage: deterministic stratified train / validation / test split by seed.

Rows arrive de-duplicated by text id (validate stage), so a sentence can never sit in two splits;
a GX check proves it on every run (train/test leakage), pinned test ids included.
The test split can be pinned (``split.test_ids_file``: one id per line) so that later retrains are
compared on the same test rows; every run writes its test ids to ``test_ids.txt`` for pinning.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from finsent.config import SPLITS, SplitParams
from finsent.data.gx_project import run_suite
from finsent.errors import FinsentError

_KEEP = ["id", "text", "label", "source"]


def _stratified(frame: pd.DataFrame, size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        rest, part = train_test_split(frame, test_size=size, random_state=seed, stratify=frame["label"])
    except ValueError as exc:
        raise FinsentError(f"cannot split {len(frame)} rows stratified by label ({exc}); "
                           f"add data or lower split.test_size / split.val_size") from exc
    return rest, part


def _pinned(frame: pd.DataFrame, ids_file: Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    if not ids_file.is_file():
        raise FinsentError(f"split.test_ids_file not found: {ids_file} (copy a run's "
                           f"data/processed/split/test_ids.txt there, or set it to null)")
    ids = {line.strip() for line in ids_file.read_text().splitlines() if line.strip()}
    inside = frame["id"].isin(ids)
    return frame[~inside], frame[inside], len(ids) - int(inside.sum())


def check_leakage(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict:
    """GX check that no text id (exact or normalised duplicate) sits in two splits; fails the stage if one does."""
    import great_expectations.expectations as gxe

    assigned = pd.concat([part[["id"]].assign(split=name) for name, part in zip(SPLITS, (train, val, test))])
    result = run_suite(assigned.reset_index(drop=True), "finsent_split_leakage",
                       [gxe.ExpectColumnValuesToBeUnique(column="id", meta={"check": "train_test_leakage"})])
    check = result["results"][0]
    if not check["success"]:
        raise FinsentError(f"train_test_leakage (expect_column_values_to_be_unique): "
                           f"{check['result']['unexpected_count']} rows share a text id across splits; "
                           f"the accepted data must be de-duplicated by id before splitting")
    return {"check": "train_test_leakage", "success": True, "rows": len(assigned)}


def split(accepted: Path, params: SplitParams, out_dir: Path) -> dict:
    frame = pd.read_parquet(accepted, columns=_KEEP).sort_values("id", kind="stable").reset_index(drop=True)
    pinned_missing = None
    if params.test_ids_file:
        rest, test, pinned_missing = _pinned(frame, Path(params.test_ids_file))
        train, val = _stratified(rest, params.val_size / (1 - params.test_size), params.seed)
    else:
        rest, test = _stratified(frame, params.test_size, params.seed)
        train, val = _stratified(rest, params.val_size / (1 - params.test_size), params.seed)
    leakage = check_leakage(train, val, test)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in zip(SPLITS, (train, val, test)):
        part.sort_values("id", kind="stable").to_parquet(out_dir / f"{name}.parquet", index=False)
        counts[name] = {k: int(v) for k, v in part["label"].value_counts().sort_index().items()}
    (out_dir / "test_ids.txt").write_text("".join(f"{i}\n" for i in sorted(test["id"])))
    summary = {"seed": params.seed, "counts": counts, "test_ids_file": params.test_ids_file,
               "pinned_ids_not_in_data": pinned_missing, "leakage_check": leakage}
    (out_dir / "split.json").write_text(json.dumps(summary, indent=2))
    return counts
