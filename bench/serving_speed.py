"""Benchmark: scoring speed of a LoRA bundle served as adapter-on-base vs merged into the base.

Usage: python bench/serving_speed.py [BUNDLE_DIR] [N_SENTENCES]
(BUNDLE_DIR defaults to models/adapter, made by `make run`). Prints rows/s for both and the ratio,
measured in the same process on the same sentences; checks the two give the same labels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from finsent.bundle import load_bundle, predict_proba
    from finsent.runtime import quiet_libraries

    quiet_libraries()
    bundle = Path(sys.argv[1] if len(sys.argv) > 1 else "models/adapter")
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    texts = [f"Company {i} said quarterly operating profit rose {i % 40} % to EUR {i % 97}.{i % 10} mn, "
             f"while net sales were flat at EUR {100 + i % 300} mn." for i in range(rows)]
    model, tokenizer, meta = load_bundle(bundle)
    figures = {}
    for name in ("adapter on base", "merged"):
        if name == "merged":
            if meta["method"] == "head_only":
                print("head_only bundle: nothing to merge")
                return
            model = model.merge_and_unload()
        predict_proba(model, tokenizer, texts[:64], meta["max_length"])  # warm-up
        started = time.perf_counter()
        probabilities = predict_proba(model, tokenizer, texts, meta["max_length"], batch_size=64)
        figures[name] = (rows / (time.perf_counter() - started), probabilities.argmax(axis=1))
        print(f"{name:<16} {figures[name][0]:8.1f} rows/s")
    same = float(np.mean(figures["merged"][1] == figures["adapter on base"][1]))
    print(f"merged / adapter speed ratio: {figures['merged'][0] / figures['adapter on base'][0]:.2f}; "
          f"same label on {same:.1%} of {rows} rows")


if __name__ == "__main__":
    main()
