"""Benchmark (GPU): training samples/s and peak GPU memory of LoRA and full fine-tune under bf16 autocast (how
finsent trains on a GPU), and scoring rows/s of the torch backend, at batch sizes 32 and 256.

Usage: python bench/gpu_speed.py [--tokenized DIR] [--base BASE] [--rows N] [--epochs N] [--device cuda|cpu]
                                 [--out JSON]

--tokenized defaults to data/tokenized (made by `make run`); its train split is repeated up to --rows rows
(default 20000), so that batches of 256 make enough steps to time. Every run is finsent's own ``train_model``
(HF Trainer, train.device cuda, bf16 autocast) with params.yaml's settings and --epochs (default 2);
samples/s counts the training batches only (no loading, no validation), as bench/peft_methods.py does, and
peak GPU memory is torch's peak allocation during the run. Scoring: the trained LoRA model through the
bundle's ``predict_proba`` (tokenizing included, batches sorted by length) on --rows generated sentences, on
the GPU in fp32 (the torch backend as served) and under bf16 autocast, against the same model on this machine's
CPU at batch 64 (the baseline, 2000 rows). Prints ratios LoRA / full fine-tune and GPU / CPU. ``--device cpu``
runs the same steps on the CPU (fp32, no memory figure): a check of the benchmark on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZES = (32, 256)
METHODS = ("lora", "full")


def repeated_train_split(tokenized: Path, rows: int, folder: Path) -> Path:
    """A copy of the tokenized folder whose train split is repeated up to ``rows`` rows."""
    import pandas as pd

    shutil.copytree(tokenized, folder)
    train = pd.read_parquet(tokenized / "train.parquet")
    copies = -(-rows // len(train))
    pd.concat([train] * copies, ignore_index=True).head(rows).to_parquet(folder / "train.parquet")
    return folder


def run_params(folder: Path, base: str, method: str, batch_size: int, epochs: int, device: str):
    from finsent.config import load_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["base"] = base
    raw["peft"]["method"] = method
    raw["train"].update(batch_size=batch_size, epochs=epochs, device=device, checkpoint_every_steps=0)
    path = folder / f"params-{method}-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


def train_once(tokenized: Path, params) -> tuple[object, dict]:
    import gc

    import torch

    from finsent.train.fit import train_model

    on_gpu = params.train.device == "cuda"
    if on_gpu:
        gc.collect()  # the previous run's trainer lets go of its GPU memory before this run's peak is counted
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model, summary = train_model(tokenized, params, show_progress=False)
    return model, {"method": params.peft.method, "batch_size": params.train.batch_size,
                   "train_samples_per_s": summary["train_samples_per_s"],
                   "wall_s": time.perf_counter() - started,
                   "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
                   "best_val_macro_f1": summary["best_val_macro_f1"]}


def scoring_texts(rows: int) -> list[str]:
    return [f"Company {i} said quarterly operating profit rose {i % 40} % to EUR {i % 97}.{i % 10} mn, "
            f"while net sales were flat at EUR {100 + i % 300} mn." for i in range(rows)]


def rows_per_s(model, tokenizer, texts: list[str], max_length: int, batch_size: int, device: str,
               bf16: bool = False) -> float:
    import torch

    from finsent.bundle import predict_proba

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        predict_proba(model, tokenizer, texts[:batch_size], max_length, batch_size, device=device)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        predict_proba(model, tokenizer, texts, max_length, batch_size, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenized", type=Path, default=REPO / "data" / "tokenized")
    parser.add_argument("--base", default="bundled", help="model.base for every run (default: bundled)")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_speed.json")
    args = parser.parse_args()

    import torch
    import transformers

    from finsent.features import TOKENIZER_DIR, load_tokenizer
    from finsent.runtime import quiet_libraries

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_speed: no CUDA device is visible (this benchmark measures a GPU; --device cpu checks it on the CPU)")
    if not (args.tokenized / "train.parquet").is_file():
        sys.exit(f"gpu_speed: no tokenized data at {args.tokenized} (run `make run` first or pass --tokenized)")
    quiet_libraries()
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"{device_name}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"bf16 {device == 'cuda' and torch.cuda.is_bf16_supported()}; {args.rows} training rows x {args.epochs} "
          "epochs", flush=True)
    torch.ones(1, device=device)  # the CUDA context starts outside the timed runs

    folder = Path(tempfile.mkdtemp(prefix="finsent-bench-gpu-"))
    tokenized = repeated_train_split(args.tokenized, args.rows, folder / "tokenized")
    training, lora_model = [], None
    for batch_size in BATCH_SIZES:
        for method in METHODS:
            model, result = train_once(tokenized, run_params(folder, args.base, method, batch_size, args.epochs,
                                                                       device))
            training.append(result)
            if method == "lora" and lora_model is None:
                lora_model = model
            memory = f"{result['peak_gpu_mib']:7.0f} MiB" if result["peak_gpu_mib"] is not None else "n/a"
            print(f"train {method:<5} batch {batch_size:>3}: {result['train_samples_per_s']:8.0f} samples/s  "
                  f"peak GPU memory {memory}  wall {result['wall_s']:5.1f} s  "
                  f"val macro-F1 {result['best_val_macro_f1']:.3f}", flush=True)
    for batch_size in BATCH_SIZES:
        lora, full = (next(r for r in training if r["method"] == m and r["batch_size"] == batch_size) for m in METHODS)
        memory = (f", peak GPU memory {lora['peak_gpu_mib'] / full['peak_gpu_mib']:.2f}x"
                  if lora["peak_gpu_mib"] is not None else "")
        print(f"LoRA / full fine-tune at batch {batch_size}: samples/s "
              f"{lora['train_samples_per_s'] / full['train_samples_per_s']:.2f}x{memory}")

    tokenizer = load_tokenizer(tokenized / TOKENIZER_DIR)
    max_length = yaml.safe_load((REPO / "params.yaml").read_text())["model"]["max_length"]
    texts = scoring_texts(args.rows)
    lora_model.eval()
    cpu = rows_per_s(lora_model, tokenizer, texts[:2000], max_length, 64, "cpu")
    print(f"score cpu  fp32 batch  64: {cpu:8.0f} rows/s (baseline, {torch.get_num_threads()} threads)", flush=True)
    scoring = [{"device": "cpu", "precision": "fp32", "batch_size": 64, "rows_per_s": cpu}]
    lora_model.to(device)
    for batch_size in BATCH_SIZES:
        for bf16 in (False, True) if device == "cuda" else (False,):
            speed = rows_per_s(lora_model, tokenizer, texts, max_length, batch_size, device, bf16)
            precision = "bf16" if bf16 else "fp32"
            scoring.append({"device": device, "precision": precision, "batch_size": batch_size, "rows_per_s": speed})
            print(f"score {device} {precision} batch {batch_size:>3}: {speed:8.0f} rows/s  {speed / cpu:6.1f}x cpu", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device_name, "torch": torch.__version__,
                                    "transformers": transformers.__version__, "rows": args.rows,
                                    "epochs": args.epochs, "training": training, "scoring": scoring}, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
