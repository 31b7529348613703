"""Benchmark: monitor scoring throughput on short finance sentences, against the plain base model.

Usage: python bench/monitor_throughput.py [BUNDLE_DIR] [N_SENTENCES]
(BUNDLE_DIR defaults to models/adapter, made by `make run`). Scores N generated short sentences
(headline length, ~8-14 words) with the monitor's scoring function (bundle: adapter on the pinned base,
batches sorted by length, dynamic padding), and the same sentences with the bare base model
(same tokenizer, batch size and threads, no adapter) as the baseline, in this process; prints rows/s
for both and the ratio. Goal: >= 200 short sentences/s on 2 cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd


def sentences(n: int) -> list[str]:
    subjects = ["Acme Oyj", "Nordic Paper", "Globex", "Baltic Shipping", "the group", "Helios Bank"]
    events = ["raises full-year guidance", "cuts 300 jobs", "shares fall 4 % after profit warning",
              "wins EUR 20 mn order", "reports flat quarterly sales", "to publish results on Friday",
              "operating profit rose to EUR 12.4 mn", "swings to a net loss"]
    return [f"{subjects[i % len(subjects)]} {events[(i * 7) % len(events)]} in Q{i % 4 + 1}" for i in range(n)]


def main() -> None:
    from transformers import AutoModelForSequenceClassification

    from finsent.base_model import verified_base_path
    from finsent.bundle import load_bundle, predict_proba
    from finsent.config import NormalizeParams
    from finsent.monitor.score import score
    from finsent.runtime import quiet_libraries

    quiet_libraries()
    bundle = Path(sys.argv[1] if len(sys.argv) > 1 else "models/adapter")
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    batch = pd.DataFrame({"text": sentences(rows)})
    score(batch.head(64), bundle, "text", 64, "bench", NormalizeParams())  # warm-up
    _, _, figures = score(batch, bundle, "text", 64, "bench", NormalizeParams())

    _, tokenizer, meta = load_bundle(bundle)
    base = AutoModelForSequenceClassification.from_pretrained(str(verified_base_path(meta["base_model"])),
                                                              num_labels=len(meta["labels"])).eval()
    texts = batch["text"].tolist()
    predict_proba(base, tokenizer, texts[:64], meta["max_length"])  # warm-up
    started = time.perf_counter()
    predict_proba(base, tokenizer, texts, meta["max_length"], batch_size=64)
    base_rate = rows / (time.perf_counter() - started)

    print(f"{rows} short sentences, batch 64, {meta['method']} bundle")
    print(f"monitor scoring (bundle)   {figures['rows_per_second']:8.1f} rows/s  (goal >= 200)")
    print(f"bare base model (baseline) {base_rate:8.1f} rows/s")
    print(f"monitor / base ratio: {figures['rows_per_second'] / base_rate:.2f}")


if __name__ == "__main__":
    main()
