"""Benchmark: scoring speed of a LoRA bundle served as adapter-on-base and merged into the base, against the
plain base classifier (the same architecture without any adapter: the baseline).

Usage: python bench/serving_speed.py [BUNDLE_DIR] [N_SENTENCES]
(BUNDLE_DIR defaults to models/adapter, made by `make run`). Prints rows/s of each and the ratios to the plain
base, measured in the same process on the same sentences, alternating twice; checks merged and adapter agree.
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
    if meta["method"] == "head_only":
        print("head_only bundle: nothing to merge")
        return
    from finsent.base_model import verified_base_path
    from finsent.train.methods import load_base_classifier

    variants = {"plain base": load_base_classifier(verified_base_path(meta["base_model"]), meta["labels"]),
                "adapter on base": model, "merged": load_bundle(bundle)[0].merge_and_unload()}
    speeds, labels = {name: [] for name in variants}, {}
    for _ in range(2):  # alternate, so drift in the machine's load hits every variant alike
        for name, variant in variants.items():
            predict_proba(variant, tokenizer, texts[:64], meta["max_length"])  # warm-up
            started = time.perf_counter()
            probabilities = predict_proba(variant, tokenizer, texts, meta["max_length"], batch_size=64)
            speeds[name].append(rows / (time.perf_counter() - started))
            labels[name] = probabilities.argmax(axis=1)
    base = max(speeds["plain base"])
    for name, runs in speeds.items():
        print(f"{name:<16} {max(runs):8.1f} rows/s (best of {len(runs)})   {max(runs) / base:.2f}x plain base")
    same = float(np.mean(labels["merged"] == labels["adapter on base"]))
    print(f"merged / plain base: {max(speeds['merged']) / base:.2f} (goal >= 0.95); merged and adapter give the same "
          f"label on {same:.1%} of {rows} rows")


if __name__ == "__main__":
    main()
