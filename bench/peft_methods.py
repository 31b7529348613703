"""Benchmark: quality, size and training speed of every PEFT method on one dataset, in one run.

Usage:
  python bench/peft_methods.py [--data FILE] [--methods lora,ia3,...] [--epochs N] [--out JSON]

--data defaults to ../shared/datasets/financial_phrasebank/Sentences_AllAgree.txt (referenced, never
copied). The data goes once through the real stage functions (ingest -> validate -> split with a
20 % stratified test split after de-duplication -> tokenize); then every method is trained and
evaluated by the real train and evaluate functions with params.yaml's settings, each in its own
process so its peak RSS is its own. A method may carry overrides of its params section, or of another
section with ``section.key``: ``lora:target_modules=query+key+value+dense,r=16,train.class_weighting=balanced``
('+' joins a list).

Prints accuracy, macro-F1, trainable %, adapter size, training samples/s (the training batches only:
forward, backward, optimizer step; the wall time with loading and validation passes is printed too)
and peak RSS per method, then the ratios of each LoRA run to the full fine-tune of this run.
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

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "financial_phrasebank" / "Sentences_AllAgree.txt"
DEFAULT_METHODS = "lora,adalora,ia3,prompt_tuning,head_only,full"


def parse_method(spec: str) -> tuple[str, dict]:
    """``name:key=value,...`` -> (method, overrides of peft.<method>)."""
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = [yaml.safe_load(v) for v in value.split("+")] if "+" in value else yaml.safe_load(value)
    return name, overrides


def write_params(folder: Path, data: Path, method: str, overrides: dict, epochs: int | None) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["sources"] = [str(data)]
    raw["split"].update(test_size=0.2, test_ids_file=None)
    raw["peft"]["method"] = method
    for key, value in overrides.items():  # "section.key" overrides params.yaml's section, "key" peft.<method>
        section, _, name = key.rpartition(".")
        target = raw[section] if section else raw["peft"].setdefault(method, {})
        target[name] = value
    if epochs:
        raw["train"]["epochs"] = epochs
    raw["train"]["checkpoint_every_steps"] = 0
    path = folder / f"params-{method}-{abs(hash(json.dumps(overrides, sort_keys=True))) % 10**6}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare(folder: Path, params_file: Path) -> dict:
    from finsent.config import load_params
    from finsent.data.ingest import ingest
    from finsent.data.sources import manifest
    from finsent.data.split import split
    from finsent.data.validate import validate
    from finsent.features import tokenize

    params = load_params(params_file)
    ingest(manifest(params.data)["files"], params.labels, params.data, folder / "ingested.parquet")
    report = validate(folder / "ingested.parquet", params.labels, params.validation, folder / "accepted.parquet",
                      folder / "quarantine.parquet", folder / "validation.json")
    counts = split(folder / "accepted.parquet", params.split, folder / "split")
    tokenize(folder / "split", params.labels, params.model, folder / "tokenized")
    return {"accounting": report["accounting"], "split": counts}


def worker(params_file: Path, folder: Path, out: Path) -> None:
    """One method: train + save + evaluate, in this process; writes its figures to ``out``."""
    from finsent.config import load_params
    from finsent.evaluate.metrics import evaluate
    from finsent.runtime import quiet_libraries
    from finsent.train.fit import save_trained, train_model

    quiet_libraries()
    params = load_params(params_file)
    started = time.perf_counter()
    model, summary = train_model(folder / "tokenized", params)
    train_seconds = time.perf_counter() - started
    bundle = out.with_suffix("")
    adapter_bytes = save_trained(model, summary, params, folder / "tokenized", bundle)
    metrics = evaluate(bundle, folder / "split" / "test.parquet", params.eval, bundle.with_name(
        bundle.name + "-eval"))
    out.write_text(json.dumps({
        "method": params.peft.method, "settings": vars(params.peft.settings), "learning_rate": summary["learning_rate"],
        "epochs": len(summary["history"]), "best_epoch": summary["best_epoch"],
        "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
        "trainable_params": summary["trainable_params"], "trainable_pct": summary["trainable_pct"],
        "adapter_bytes": adapter_bytes, "train_seconds": train_seconds,
        "train_samples_per_s": summary["train_samples_per_s"],  # training batches only: no loading, no validation
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"methods separated by ',' (by ';' when any carries "
                        f"overrides); default {DEFAULT_METHODS}")
    parser.add_argument("--epochs", type=int, help="override train.epochs for every method")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "peft_methods.json")
    parser.add_argument("--worker", nargs=3, metavar=("PARAMS", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*map(Path, args.worker))
        return
    if not args.data.is_file():
        sys.exit(f"peft_methods: dataset not found: {args.data} (pass --data)")
    separator = ";" if ";" in args.methods or ":" in args.methods else ","  # overrides contain commas
    specs = [parse_method(s) for s in args.methods.split(separator)]
    folder = Path(tempfile.mkdtemp(prefix="finsent-bench-peft-"))
    data_info = prepare(folder, write_params(folder, args.data, "lora", {}, args.epochs))
    print(f"data: {args.data.name}: {json.dumps(data_info['accounting'])}; split {data_info['split']}")
    results = []
    for method, overrides in specs:
        params_file = write_params(folder, args.data, method, overrides, args.epochs)
        out = folder / f"{params_file.stem}.json"
        done = subprocess.run([sys.executable, __file__, "--worker", str(params_file), str(folder), str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            print(f"{method}: FAILED\n{done.stderr[-3000:]}")
            continue
        label = method + ("" if not overrides else " " + json.dumps(overrides))
        results.append({"label": label, **json.loads(out.read_text())})
        r = results[-1]
        print(f"{label:<44} acc {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  trainable "
              f"{r['trainable_pct']:6.2f} %  adapter {r['adapter_bytes'] / 1e6:7.2f} MB  {r['epochs']} ep "
              f"{r['train_seconds']:6.0f} s wall  {r['train_samples_per_s']:6.1f} train samples/s  peak RSS "
              f"{r['peak_rss_mb']:6.0f} MB", flush=True)
    full = next((r for r in results if r["method"] == "full"), None)
    for lora in (r for r in results if r["method"] == "lora" and full):
        print(f"{lora['label']} / full fine-tune: training samples/s ratio "
              f"{lora['train_samples_per_s'] / full['train_samples_per_s']:.2f} (goal >= 1.7); peak RSS "
              f"{lora['peak_rss_mb']:.0f} MB vs {full['peak_rss_mb']:.0f} MB (goal <= 2048 MB); adapter "
              f"{lora['adapter_bytes'] / 1e6:.2f} MB vs full model {full['adapter_bytes'] / 1e6:.1f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": str(args.data), **data_info, "results": results}, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
