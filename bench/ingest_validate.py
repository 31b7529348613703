"""Benchmark: ingest + validate a generated 100 k-row CSV, against plain pandas.read_csv of the same file.

Usage: python bench/ingest_validate.py [ROWS]
Generates a CSV (finance-like sentences, ~1 % bad rows of several kinds, some duplicates) in a temp
folder, then times, in this process: pandas.read_csv (the baseline), the sources + ingest stages,
and the validate stage as the pipeline runs it (file-backed GX context, stored results, Data Docs).
Prints rows/s for each and the ratios to read_csv; checks the accounting invariant.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def generate(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    subjects = ["Operating profit", "Net sales", "Order intake", "The share price", "Quarterly revenue", "EBITDA"]
    moves = {"positive": ["rose", "increased", "jumped", "improved"], "negative": ["fell", "decreased", "slumped"],
             "neutral": ["was reported", "is due", "will be published"]}
    bad = [("", "neutral"), ("ok", "positive"), ("=cmd|' /C calc'!A0", "positive"), ("Profit\x00 rose", "positive"),
           ("Sales fell sharply in the quarter", "postive")]
    records = []
    for i in range(rows):
        if i % 100 == 99:
            text, label = bad[i // 100 % len(bad)]
        elif i % 50 == 7 and records:
            text, label = records[rng.randrange(len(records))]  # a duplicate
        else:
            label = rng.choice(list(moves))
            text = (f"{rng.choice(subjects)} of company {rng.randrange(5000)} {rng.choice(moves[label])} "
                    f"{rng.randrange(1, 60)} % to EUR {rng.randrange(1, 900)}.{rng.randrange(10)} mn in Q{i % 4 + 1}")
        records.append((text, label))
    pd.DataFrame(records, columns=["text", "label"]).to_csv(path, index=False)


def ingest_and_validate(source: Path, folder: Path) -> tuple[float, float, dict]:
    """The sources + ingest and validate stages on ``source``, as the pipeline runs them, outputs in ``folder``
    -> (ingest seconds, validate seconds, validation report)."""
    from finsent.config import DataParams, ValidationParams
    from finsent.data.ingest import ingest
    from finsent.data.sources import manifest
    from finsent.data.validate import validate

    labels = ["negative", "neutral", "positive"]
    data = DataParams(sources=[str(source)])
    started = time.perf_counter()
    ingest(manifest(data)["files"], labels, data, folder / "ingested.parquet")
    ingest_time = time.perf_counter() - started
    started = time.perf_counter()
    report = validate(folder / "ingested.parquet", labels, ValidationParams(), folder / "accepted.parquet",
                      folder / "quarantine.parquet", folder / "validation.json", gx_project=folder,
                      docs_dir=folder / "data_docs", profile_out=folder / "profile.json")
    return ingest_time, time.perf_counter() - started, report


def main() -> None:
    from finsent.runtime import quiet_libraries

    quiet_libraries()
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        source = folder / "news.csv"
        generate(source, rows)
        print(f"{rows} rows, {source.stat().st_size / 1e6:.1f} MB")
        import great_expectations  # noqa: F401  (import time is not validation time)

        started = time.perf_counter()
        pd.read_csv(source)
        read_csv = time.perf_counter() - started

        ingest_time, validate_time, report = ingest_and_validate(source, folder)

    counts = report["accounting"]
    assert counts["rows_read"] == rows == counts["rows_accepted"] + counts["rows_quarantined"] + \
        counts["duplicates_merged"]
    print(f"pandas.read_csv   {read_csv:6.2f} s  {rows / read_csv:10,.0f} rows/s  (baseline)")
    print(f"sources + ingest  {ingest_time:6.2f} s  {rows / ingest_time:10,.0f} rows/s  "
          f"{ingest_time / read_csv:5.1f}x read_csv")
    print(f"validate          {validate_time:6.2f} s  {rows / validate_time:10,.0f} rows/s  "
          f"{validate_time / read_csv:5.1f}x read_csv")
    print(f"accounting: read {counts['rows_read']} = accepted {counts['rows_accepted']} + quarantined "
          f"{counts['rows_quarantined']} + duplicates merged {counts['duplicates_merged']}")


if __name__ == "__main__":
    main()
