"""Benchmark: the tokenize stage on N generated finance sentences (default 100,000), against a bare
batch call of the same fast tokenizer measured in the same run.

Usage: python bench/tokenize_speed.py [N]
The stage adds reading the split parquet files, label ids, writing parquet and the tokenizer
identity; the ratio says what that costs. Sentences are generated here (no dataset is copied).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def sentences(n: int) -> pd.DataFrame:
    labels = ["negative", "neutral", "positive"]
    return pd.DataFrame({
        "id": [f"{i:016x}" for i in range(n)],
        "text": [f"Company {i % 997} said quarterly operating profit {'rose' if i % 3 else 'fell'} {i % 40} % to "
                 f"EUR {i % 97}.{i % 10} mn, while net sales were {'flat' if i % 2 else 'up'} at EUR {100 + i % 300} mn."
                 for i in range(n)],
        "label": [labels[i % 3] for i in range(n)]})


def main() -> None:
    from finsent.base_model import resolve_base
    from finsent.config import ModelParams
    from finsent.features import load_tokenizer, tokenize
    from finsent.runtime import quiet_libraries

    quiet_libraries()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    frame = sentences(n)
    folder = Path(tempfile.mkdtemp(prefix="finsent-bench-tok-"))
    (folder / "split").mkdir()
    shares = {"train": slice(0, int(n * 0.7)), "val": slice(int(n * 0.7), int(n * 0.8)), "test": slice(int(n * 0.8), n)}
    for name, rows in shares.items():
        frame.iloc[rows].to_parquet(folder / "split" / f"{name}.parquet", index=False)
    params = ModelParams()

    tokenizer = load_tokenizer(resolve_base(params.base))
    started = time.perf_counter()
    tokenizer(frame["text"].tolist(), truncation=True, max_length=params.max_length)
    bare = time.perf_counter() - started

    started = time.perf_counter()
    tokenize(folder / "split", ["negative", "neutral", "positive"], params, folder / "tokenized")
    stage = time.perf_counter() - started
    print(f"{n} sentences: bare tokenizer {bare:.2f} s ({n / bare:,.0f} sentences/s); tokenize stage {stage:.2f} s "
          f"({n / stage:,.0f} sentences/s); stage / bare = {stage / bare:.2f}")


if __name__ == "__main__":
    main()
