"""Benchmark: how ingest + validate and monitor scoring grow with the number of rows (time and peak memory).

Usage: python bench/scale.py [--sizes 10000,100000,1000000] [--score-sizes 10000,100000] [--bundle DIR]
Each measurement runs in its own process on generated rows (never committed): ingest + validate a CSV of N
finance-like rows (bench/ingest_validate.py's generator: ~1 % bad rows, ~2 % duplicates) with the stage
functions as the pipeline calls them, and score N short headlines with the monitor's scoring function and the
bundle (default models/adapter, from `make run`; served as its onnx/ folder says, else on torch). Prints seconds,
rows/s, peak RSS of the process, and the growth of the time per row against the smallest size (1.00 = linear).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def ingest_validate(rows: int) -> dict:
    sys.path.insert(0, str(BENCH))
    from ingest_validate import generate, ingest_and_validate

    from finsent.runtime import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        generate(folder / "news.csv", rows)
        before = peak_rss_mb()
        ingest_seconds, validate_seconds, report = ingest_and_validate(folder / "news.csv", folder)
    counts = report["accounting"]
    assert counts["rows_read"] == rows == counts["rows_accepted"] + counts["rows_quarantined"] + \
        counts["duplicates_merged"]
    return {"seconds": ingest_seconds + validate_seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before}


def monitor_scoring(rows: int, bundle: str) -> dict:
    import pandas as pd

    sys.path.insert(0, str(BENCH))
    from monitor_throughput import sentences

    from finsent.config import NormalizeParams
    from finsent.monitor.score import score
    from finsent.runtime import quiet_libraries

    quiet_libraries()
    batch = pd.DataFrame({"text": sentences(rows)})
    score(batch.head(64), Path(bundle), "text", 64, "bench", NormalizeParams())  # warm-up, model loaded
    before = peak_rss_mb()
    started = time.perf_counter()
    _, _, figures = score(batch, Path(bundle), "text", 64, "bench", NormalizeParams())
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before,
            "backend": figures["backend"]}


def measure(kind: str, rows: int, bundle: str) -> dict:
    """One measurement in a fresh process, so peak RSS is this size's alone."""
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(rows), bundle], capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"scale: {kind} at {rows} rows failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="rows for ingest + validate")
    parser.add_argument("--score-sizes", default="10000,100000", help="rows for monitor scoring")
    parser.add_argument("--bundle", default="models/adapter")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rows, bundle = args.child
        result = ingest_validate(int(rows)) if kind == "ingest" else monitor_scoring(int(rows), bundle)
        print(json.dumps(result))
        return
    for kind, sizes in (("ingest", args.sizes), ("score", args.score_sizes)):
        title = "ingest + validate" if kind == "ingest" else f"monitor scoring ({args.bundle})"
        print(f"{title}:")
        first = None
        for rows in [int(size) for size in sizes.split(",") if size]:
            result = measure(kind, rows, args.bundle)
            per_row = result["seconds"] / rows
            first = first or per_row
            backend = f"  on {result['backend']}" if "backend" in result else ""
            print(f"  {rows:>9,} rows  {result['seconds']:8.1f} s  {rows / result['seconds']:9,.0f} rows/s  "
                  f"peak RSS {result['peak_rss_mb']:7,.0f} MB  time per row {per_row / first:4.2f}x the smallest"
                  f"{backend}", flush=True)


if __name__ == "__main__":
    main()
