"""Benchmark: model quality of the default recipe on the Financial PhraseBank, over several training seeds.

Usage:
  .venv/bin/python bench/quality.py [--suites allagree,50agree,50agree-75/25] [--seeds 3] [--first-seed 1] [--jobs 2]
                                    [-S section.key=value ...] [--no-test] [--out JSON]

The PhraseBank files are read from ../shared/datasets/financial_phrasebank/ (referenced, never copied).
Each suite goes once through the real stage functions (ingest -> validate -> split, de-duplicated first,
stratified by seed 42 -> tokenize); then the real train and evaluate functions run once per training seed
(train.seed = 1, 2, 3, ...) with params.yaml's settings plus any ``-S`` overrides, each run in its own
process (``--jobs`` at a time, the cores shared between them).

Suites: ``allagree`` and ``50agree``: 70 / 10 / 20 % train / validation / test; ``50agree-75/25``: 25 % test
(FinGPT's split), 10 % of the rest for validation. ``--no-test`` prints the validation figures only: recipe
choices are made on those, never on a test split.

Prints, per suite: validation macro-F1 of the best epoch, test accuracy and macro-F1 (mean +- std, min-max over
the seeds), training time per run, adapter size as a share of the base, and the published anchors beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PHRASEBANK = REPO.parent / "shared" / "datasets" / "financial_phrasebank"
SUITES = {  # name -> (file, test_size, val_size)
    "allagree": ("Sentences_AllAgree.txt", 0.2, 0.1),
    "50agree": ("Sentences_50Agree.txt", 0.2, 0.1),
    "50agree-75/25": ("Sentences_50Agree.txt", 0.25, 0.075),
}
ANCHORS = {  # published macro-F1 figures a reader compares with (the sources: papers and model cards)
    "allagree": "FinBERT 0.95 (Araci 2019)",
    "50agree": "FinBERT 0.84 (Araci 2019); DeBERTa-v3-base 0.865 (model card, 20 % split)",
    "50agree-75/25": "FinGPT v3.3 0.877 (13 B LLM + LoRA, 75/25 split)",
}


def set_key(raw: dict, dotted: str, value) -> None:
    *sections, name = dotted.split(".")
    target = raw
    for section in sections:
        if section not in target or not isinstance(target[section], dict):
            sys.exit(f"quality: -S {dotted}: no section {section!r} in params.yaml")
        target = target[section]
    if name not in target:
        sys.exit(f"quality: -S {dotted}: no key {name!r} in params.yaml")
    target[name] = value


def write_params(folder: Path, suite: str, overrides: list[str], seed: int, threads: int) -> Path:
    file, test_size, val_size = SUITES[suite]
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["sources"] = [str(PHRASEBANK / file)]
    raw["split"].update(test_size=test_size, val_size=val_size, test_ids_file=None, seed=42)
    for item in overrides:
        key, _, value = item.partition("=")
        set_key(raw, key, yaml.safe_load(value))
    raw["train"].update(seed=seed, checkpoint_every_steps=0, num_threads=threads)
    path = folder / f"params-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare(folder: Path, params_file: Path) -> dict:
    """The real ingest -> validate -> split -> tokenize stage functions on the suite's file."""
    from finsent.config import load_params
    from finsent.data.ingest import ingest
    from finsent.data.sources import manifest
    from finsent.data.split import split
    from finsent.data.validate import validate
    from finsent.features import tokenize
    from finsent.runtime import quiet_libraries

    quiet_libraries()
    params = load_params(params_file)
    ingest(manifest(params.data)["files"], params.labels, params.data, folder / "ingested.parquet")
    validate(folder / "ingested.parquet", params.labels, params.validation, folder / "accepted.parquet",
             folder / "quarantine.parquet", folder / "validation.json")
    counts = split(folder / "accepted.parquet", params.split, folder / "split")
    tokenize(folder / "split", params.labels, params.model, folder / "tokenized")
    return {name: sum(by_label.values()) for name, by_label in counts.items()}


def worker(params_file: Path, folder: Path, out: Path, with_test: bool) -> None:
    """One training seed: train + save (+ evaluate on the test split) in this process; figures to ``out``."""
    from finsent.base_model import resolve_base
    from finsent.config import load_params
    from finsent.runtime import quiet_libraries
    from finsent.train.fit import save_trained, train_model

    quiet_libraries()
    params = load_params(params_file)
    started = time.perf_counter()
    model, summary = train_model(folder / "tokenized", params)
    train_seconds = time.perf_counter() - started
    bundle = out.with_suffix("")
    adapter_bytes = save_trained(model, summary, params, folder / "tokenized", bundle)
    base_bytes = sum(f.stat().st_size for f in resolve_base(params.model.base).glob("*.safetensors"))
    result = {"seed": params.train.seed, "val_macro_f1": summary["best_val_macro_f1"],
              "best_epoch": summary["best_epoch"], "epochs": len(summary["history"]),
              "val_macro_f1_per_epoch": [round(h["val_macro_f1"], 4) for h in summary["history"]],
              "train_seconds": train_seconds, "adapter_bytes": adapter_bytes,
              "adapter_share_of_base": adapter_bytes / base_bytes, "trainable_pct": summary["trainable_pct"]}
    if with_test:
        from finsent.evaluate.metrics import evaluate

        metrics = evaluate(bundle, folder / "split" / "test.parquet", params.eval,
                           bundle.with_name(bundle.name + "-eval"))
        result.update(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"])
    out.write_text(json.dumps(result))


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f} ({min(values):.4f}–{max(values):.4f})"


def prepare_suite(suite: str, args, threads: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"finsent-quality-{suite.replace('/', '-')}-"))
    return {"suite": suite, "folder": folder, "rows": prepare(folder, write_params(folder, suite, args.set, 1, threads))}


def train_seed(prepared: dict, seed: int, args, threads: int) -> dict:
    suite, folder = prepared["suite"], prepared["folder"]
    params_file = write_params(folder, suite, args.set, seed, threads)
    out = folder / f"seed{seed}.json"
    done = subprocess.run([sys.executable, __file__, "--worker", str(params_file), str(folder), str(out),
                           "0" if args.no_test else "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise SystemExit(f"quality: {suite} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def print_suite(suite: str, rows: dict, runs: list[dict], args, threads: int) -> None:
    print(f"\n{suite}: {rows['train']} train / {rows['val']} validation / {rows['test']} test rows, "
          f"{len(runs)} training seeds", flush=True)
    print(f"  validation macro-F1 (best epoch) {spread([r['val_macro_f1'] for r in runs])}")
    if not args.no_test:
        print(f"  test accuracy                    {spread([r['accuracy'] for r in runs])}")
        print(f"  test macro-F1                    {spread([r['macro_f1'] for r in runs])}    anchor: {ANCHORS[suite]}")
    print(f"  training time per run            {statistics.fmean(r['train_seconds'] for r in runs) / 60:.1f} min "
          f"(max {max(r['train_seconds'] for r in runs) / 60:.1f}; {args.jobs} run(s) at a time, {threads} thread(s) "
          f"each); best epochs {[r['best_epoch'] for r in runs]}")
    print(f"  adapter bundle                   {runs[0]['adapter_bytes'] / 1e6:.2f} MB = "
          f"{100 * runs[0]['adapter_share_of_base']:.2f} % of the base; {runs[0]['trainable_pct']:.2f} % trainable",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, of {', '.join(SUITES)}")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per suite (1..N)")
    parser.add_argument("--first-seed", type=int, default=1, help="start the seeds here (--first-seed 3 --seeds 1: "
                                                                  "seed 3 alone, to add a seed to earlier runs)")
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time (cores are split between them)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: the cores / --jobs)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a params.yaml value for every run, e.g. -S peft.lora.r=16")
    parser.add_argument("--no-test", action="store_true", help="validation figures only (for choosing a recipe)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality.json")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        params_file, folder, out, with_test = args.worker
        worker(Path(params_file), Path(folder), Path(out), with_test == "1")
        return
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        sys.exit(f"quality: unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    missing = sorted({SUITES[s][0] for s in suites if not (PHRASEBANK / SUITES[s][0]).is_file()})
    if missing:
        sys.exit(f"quality: PhraseBank file(s) not found under {PHRASEBANK}: {', '.join(missing)}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"quality: params.yaml{' with ' + ' '.join(args.set) if args.set else ''}; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}")
    prepared = [prepare_suite(suite, args, threads) for suite in suites]
    jobs = [(p, seed) for p in prepared for seed in range(args.first_seed, args.first_seed + args.seeds)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # every (suite, seed) run, --jobs at a time
        runs = list(pool.map(lambda job: train_seed(*job, args, threads), jobs))
    results = []
    for number, p in enumerate(prepared):
        suite_runs = runs[number * args.seeds:(number + 1) * args.seeds]
        print_suite(p["suite"], p["rows"], suite_runs, args, threads)
        results.append({"suite": p["suite"], "rows": p["rows"], "runs": suite_runs})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"overrides": args.set, "seeds": args.seeds, "suites": results}, indent=2))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
