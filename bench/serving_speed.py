"""Benchmark: scoring speed of a bundle on each serving backend, against PyTorch fp32 adapter-on-base (what
finsent served before ONNX: the baseline).

Usage: python bench/serving_speed.py [BUNDLE_DIR] [N_SENTENCES] [--headlines]
(BUNDLE_DIR defaults to models/adapter, made by `make run`). Scores the first N_SENTENCES (default 2000) of the
Financial PhraseBank 50Agree file when ../shared holds it, else generated finance sentences (with --headlines:
generated short headlines, the monitor benchmark's), with: the adapter on
its PyTorch base, the merged model on PyTorch, the merged model on ONNX Runtime fp32 and dynamic INT8 in the onnx
stage's two recipes (every projection; the sensitive ones kept fp32), exported here as the onnx stage exports
them, scored row by row as they are served, and the first recipe batched for comparison (not served: in a
batch, a row's INT8 label depends on the rows beside it). Each is timed twice, alternating, best run kept;
prints rows/s, the ratio to the baseline and the share of labels equal to the baseline's.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHRASEBANK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "financial_phrasebank" / "Sentences_50Agree.txt"


def sentences(rows: int) -> tuple[list[str], str]:
    if PHRASEBANK.is_file():
        lines = PHRASEBANK.read_text(encoding="latin-1").splitlines()
        return [line.rsplit("@", 1)[0] for line in lines if "@" in line][:rows], "PhraseBank 50Agree"
    return ([f"Company {i} said quarterly operating profit rose {i % 40} % to EUR {i % 97}.{i % 10} mn, "
             f"while net sales were flat at EUR {100 + i % 300} mn." for i in range(rows)], "generated")


def main() -> None:
    import torch

    from finsent.bundle import load_bundle
    from finsent.features import TOKENIZER_DIR
    from finsent.onnx_model import OnnxScorer, TorchScorer, export_fp32, quantize_int8, sensitive_projections, this_cpu
    from finsent.runtime import quiet_libraries

    quiet_libraries()
    headlines = "--headlines" in sys.argv
    args = [arg for arg in sys.argv[1:] if arg != "--headlines"]
    bundle = Path(args[0] if args else "models/adapter")
    rows = int(args[1]) if len(args) > 1 else 2000
    if headlines:
        from monitor_throughput import sentences as short_headlines

        texts, kind = short_headlines(rows), "generated headline"
    else:
        texts, kind = sentences(rows)
    model, tokenizer, meta = load_bundle(bundle)
    length = meta["max_length"]
    with tempfile.TemporaryDirectory(prefix="finsent-bench-") as scratch:
        fp32, int8 = Path(scratch) / "model.onnx", Path(scratch) / "model-int8.onnx"
        int8_kept = Path(scratch) / "model-int8-sensitive-fp32.onnx"
        export_fp32(bundle, fp32)
        quantize_int8(fp32, int8)
        quantize_int8(fp32, int8_kept, sensitive_projections(fp32))
        scorers = {"torch adapter (fp32)": TorchScorer(model, tokenizer, length),
                   "torch merged (fp32)": TorchScorer(load_bundle(bundle)[0].merge_and_unload(), tokenizer, length),
                   "onnx (fp32)": OnnxScorer(fp32, bundle / TOKENIZER_DIR, length),
                   "onnx-int8": OnnxScorer(int8, bundle / TOKENIZER_DIR, length, row_by_row=True),
                   "onnx-int8 sensitive fp32": OnnxScorer(int8_kept, bundle / TOKENIZER_DIR, length, row_by_row=True),
                   "onnx-int8 batched": OnnxScorer(int8, bundle / TOKENIZER_DIR, length)}
        speeds, labels = {name: [] for name in scorers}, {}
        for _ in range(2):  # alternate, so drift in the machine's load hits every backend alike
            for name, scorer in scorers.items():
                scorer.predict_proba(texts[:64])  # warm-up
                started = time.perf_counter()
                labels[name] = scorer.predict_proba(texts).argmax(axis=1)
                speeds[name].append(len(texts) / (time.perf_counter() - started))
    baseline = "torch adapter (fp32)"
    print(f"{len(texts)} {kind} sentences, batches of 64 (INT8 row by row, as served; 'batched': not served, a "
          f"row's label depends on its neighbours), torch threads {torch.get_num_threads()}, "
          f"bundle {bundle} ({meta['method']})")
    cpu = this_cpu()  # INT8's speed and labels depend on the CPU's integer instructions
    print(f"CPU {cpu['cpu']} (INT8 instructions: {', '.join(cpu['int8_instructions'] or ['unknown'])}), "
          f"ONNX Runtime {cpu['onnxruntime']}")
    for name, runs in speeds.items():
        same = float(np.mean(labels[name] == labels[baseline]))
        print(f"{name:<25} {max(runs):8.1f} rows/s   {max(runs) / max(speeds[baseline]):.2f}x baseline   "
              f"labels equal to baseline {same:.1%}")


if __name__ == "__main__":
    main()
