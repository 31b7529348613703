"""Train stage: fit the PEFT adapter (or head, or whole model) on the tokenized train split.

A plain PyTorch loop: AdamW on the trainable parameters only, gradient accumulation, LR schedule
with warmup, dynamically padded batches, optional class weighting, validation loss and macro-F1
after each epoch, the best epoch (by validation macro-F1) kept, early stopping, resumable
checkpoints. On CUDA the forward passes run under bf16 autocast where the GPU supports it.
Seeded so that the same data + params give the same adapter bytes on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from finsent.base_model import base_identity, resolve_base
from finsent.bundle import save_bundle
from finsent.config import Params
from finsent.errors import FinsentError
from finsent.features import TOKENIZER_DIR, load_tokenizer
from finsent.train import checkpoint, distributed
from finsent.train.methods import (after_best_weights_restored, after_optimizer_step, build_trainable,
                                   count_parameters)
from finsent.train.report import plot_curve, write_history

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise FinsentError("train.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return requested


def uses_bf16(device: str) -> bool:
    import torch

    return device.startswith("cuda") and torch.cuda.is_bf16_supported()


def autocast(device: str):
    """bf16 autocast on a GPU that supports it; full precision otherwise (CPU: fp32). The weights, optimizer
    state and saved adapter stay fp32 either way."""
    import torch

    if uses_bf16(device):
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pad_batch(sequences: list, pad_id: int) -> dict:
    """Pad to the longest sequence in the batch (dynamic padding), with its attention mask."""
    import torch

    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.from_numpy(np.array(ids, dtype=np.int64))
        attention_mask[row, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


LENGTH_GROUP_BATCHES = 50  # group_by_length: rows are length-sorted within windows of this many batches


def length_grouped(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng) -> np.ndarray:
    """``order`` re-arranged so each batch holds rows of similar length (less padding, the same rows per epoch):
    sorted by length within windows of LENGTH_GROUP_BATCHES batches, then the batches shuffled (as HF's
    ``group_by_length`` sampler does)."""
    window = batch_size * LENGTH_GROUP_BATCHES
    grouped = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                              for chunk in np.array_split(order, max(1, -(-len(order) // window)))])
    batches = [grouped[i:i + batch_size] for i in range(0, len(grouped), batch_size)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def _batches(frame: pd.DataFrame, batch_size: int, tokenizer, shuffle_seed: int | None, group_by_length: bool = False):
    """Batches of this process's rows; a seeded shuffle (training) is sharded across data-parallel ranks."""
    import torch

    order = np.arange(len(frame))
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        order = distributed.shard(rng.permutation(len(frame)))
        if group_by_length:
            order = length_grouped(order, frame["input_ids"].map(len).to_numpy(), batch_size, rng)
    for start in range(0, len(order), batch_size):
        rows = frame.iloc[order[start:start + batch_size]]
        yield pad_batch(rows["input_ids"].tolist(), tokenizer.pad_token_id), torch.tensor(rows["label_id"].to_numpy())


def _to(batch: dict, device: str) -> dict:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _evaluate(model, frame: pd.DataFrame, tokenizer, batch_size: int, device: str) -> tuple[float, float]:
    import torch

    model.eval()
    losses, predictions = [], []
    with torch.inference_mode(), autocast(device):
        for inputs, labels in _batches(frame, batch_size, tokenizer, None):
            output = model(**_to(inputs, device), labels=labels.to(device))
            losses.append(float(output.loss) * len(labels))
            predictions.extend(output.logits.argmax(-1).cpu().tolist())
    return sum(losses) / len(frame), float(f1_score(frame["label_id"], predictions, average="macro"))


def class_weights(label_ids: np.ndarray, n_labels: int):
    """``balanced``: n / (k * n_c), so every class carries the same total weight (absent classes: 1)."""
    import torch

    counts = np.bincount(label_ids, minlength=n_labels).astype(np.float64)
    weights = np.where(counts > 0, len(label_ids) / (n_labels * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def _loss(output, labels, weights, label_smoothing: float = 0.0):
    """The model's own loss (AdaLoRA adds its orthogonality term there), its cross-entropy re-weighted by class
    and label-smoothed when asked."""
    if weights is None and not label_smoothing:
        return output.loss
    import torch.nn.functional as F

    logits = output.logits.float()
    return (output.loss - F.cross_entropy(logits, labels)
            + F.cross_entropy(logits, labels, weight=weights, label_smoothing=label_smoothing))


def train_model(tokenized_dir: Path, params: Params, checkpoint_root: Path | None = None, on_epoch=None,
                show_progress: bool = True):
    """-> (trained model with the best epoch's weights, on CPU; summary). Resumes from a checkpoint if one fits.
    ``on_epoch(entry)`` is called with each epoch's history entry (``finsent tune`` reports it to its pruner,
    which may stop the training by raising)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    started = time.perf_counter()
    cfg = params.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = distributed.setup(pick_device(cfg.device))
    rank, _, world_size = distributed.world()
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(tokenized_dir / TOKENIZER_DIR)
    train = pd.read_parquet(tokenized_dir / "train.parquet")
    val = pd.read_parquet(tokenized_dir / "val.parquet")
    identity = base_identity(params.model.base)
    rank_rows = len(distributed.shard(np.arange(len(train))))  # rows this rank trains on per epoch
    batches_per_epoch = -(-rank_rows // cfg.batch_size)
    steps_per_epoch = -(-batches_per_epoch // cfg.grad_accum_steps)
    total_steps = cfg.epochs * steps_per_epoch
    model = build_trainable(resolve_base(params.model.base), params.labels, params.peft, total_steps,
                            params.model.pooling).to(device)
    sizes = count_parameters(model)
    forward = distributed.wrap(model, device)  # DDP averages gradients across ranks; the model itself is saved
    if world_size > 1:
        torch.manual_seed(cfg.seed + rank)  # own dropout masks per rank (DDP already synced the initial weights)
    learning_rate = params.peft.settings.learning_rate or cfg.learning_rate
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate,
                                  weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(SCHEDULES[cfg.lr_schedule], optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    weights = (class_weights(train["label_id"].to_numpy(), len(params.labels)).to(device)
               if cfg.class_weighting == "balanced" else None)

    folder = None
    if checkpoint_root is not None and cfg.checkpoint_every_steps and world_size == 1:
        sections = {k: params.as_dict()[k] for k in ("labels", "model", "peft", "train")}
        folder = Path(checkpoint_root) / checkpoint.run_key(tokenized_dir, sections)
    position = (checkpoint.load(folder, model, optimizer, scheduler) if folder else None) or {
        "step": 0, "epoch": 1, "batch": 0, "running": 0.0, "history": [], "best_f1": -1.0, "best_state": None,
        "since_best": 0}
    position.setdefault("steps", [])  # per optimizer step: mean loss of its batches, learning rate used
    resumed_from = position["step"]
    if resumed_from:
        print(f"train: resuming from checkpoint at step {resumed_from}/{total_steps} (epoch {position['epoch']})")

    progress = tqdm(total=total_steps, initial=position["step"], desc="train", unit="step",
                    disable=not (show_progress and distributed.is_main()))
    stepping_seconds, stepped_rows = 0.0, 0  # training throughput of this process: batches only, no validation
    for epoch in range(position["epoch"], cfg.epochs + 1):
        model.train()
        epoch_started = time.perf_counter()
        skip = position["batch"] if epoch == position["epoch"] else 0
        running = position["running"] if epoch == position["epoch"] else 0.0
        step_loss, step_rows = 0.0, 0  # checkpoints fall on step boundaries: a resumed step starts at zero
        for number, (inputs, labels) in enumerate(_batches(train, cfg.batch_size, tokenizer, cfg.seed + epoch,
                                                                  cfg.group_by_length), 1):
            if number <= skip:
                continue  # consumed before the checkpoint
            labels = labels.to(device)
            with autocast(device):
                output = forward(**_to(inputs, device), labels=labels)
            loss = _loss(output, labels, weights, cfg.label_smoothing)
            (loss / cfg.grad_accum_steps).backward()
            running += loss.item() * len(labels)
            step_loss, step_rows = step_loss + loss.item() * len(labels), step_rows + len(labels)
            stepped_rows += len(labels)
            if number % cfg.grad_accum_steps and number != batches_per_epoch:
                continue
            used_rate = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            position["step"] += 1
            position["steps"].append({"step": position["step"], "train_loss": step_loss / step_rows,
                                      "learning_rate": used_rate})
            step_loss, step_rows = 0.0, 0
            after_optimizer_step(model, params.peft, position["step"])  # reads the gradients: before zero_grad
            optimizer.zero_grad(set_to_none=True)
            progress.update(1)
            if folder and position["step"] % cfg.checkpoint_every_steps == 0 and number != batches_per_epoch:
                checkpoint.save(folder, model, optimizer, scheduler,
                                {**position, "epoch": epoch, "batch": number, "running": running})
        stepping_seconds += time.perf_counter() - epoch_started
        val_loss, val_f1 = _evaluate(model, val, tokenizer, cfg.batch_size * 2, device)  # same on every rank
        trained_rows = distributed.sum_across(float(rank_rows), device)
        position["history"].append({"epoch": epoch, "train_loss": distributed.sum_across(running, device) / trained_rows,
                                    "val_loss": val_loss,
                                    "val_macro_f1": val_f1})
        progress.set_postfix(epoch=epoch, val_f1=f"{val_f1:.3f}")
        if on_epoch is not None:
            on_epoch(position["history"][-1])
        if val_f1 > position["best_f1"]:
            position["best_f1"], position["since_best"] = val_f1, 0
            position["best_state"] = {n: p.detach().cpu().clone() for n, p in model.named_parameters()
                                      if p.requires_grad}
        else:
            position["since_best"] += 1
        stop = cfg.early_stopping_patience and position["since_best"] >= cfg.early_stopping_patience
        if folder and not stop and epoch < cfg.epochs:  # the epoch boundary is a checkpoint too
            checkpoint.save(folder, model, optimizer, scheduler, {**position, "epoch": epoch + 1, "batch": 0,
                                                                  "running": 0.0})
        if stop:
            print(f"train: early stop after epoch {epoch} ({position['since_best']} epochs without a better validation macro-F1)")
            break
    progress.close()
    model = model.cpu()
    model.load_state_dict(position["best_state"], strict=False)
    after_best_weights_restored(model, params.peft)
    model.eval()
    history = position["history"]
    summary = {"history": history, "steps": position["steps"], "best_epoch": max(history, key=lambda h: h["val_macro_f1"])["epoch"],
               "best_val_macro_f1": position["best_f1"], "device": device, "base_model": identity,
               "method": params.peft.method, "learning_rate": learning_rate, "optimizer_steps": position["step"],
               "resumed_from_step": resumed_from, "processes": world_size,
               "train_samples_per_s": stepped_rows / stepping_seconds if stepping_seconds else None,
               "train_seconds": time.perf_counter() - started, **sizes}
    if folder:
        checkpoint.clear(folder)
    distributed.teardown()
    return model, summary


def save_trained(model, summary: dict, params: Params, tokenized_dir: Path, out_dir: Path) -> int:
    """Write the bundle of a trained model -> its size in bytes."""
    meta = {"method": params.peft.method, "labels": list(params.labels), "max_length": params.model.max_length,
            "pooling": params.model.pooling,
            "base_model": summary["base_model"], "best_epoch": summary["best_epoch"], "device": summary["device"],
            **{k: summary[k] for k in ("trainable_params", "total_params", "trainable_pct")}}
    save_bundle(model, tokenized_dir / TOKENIZER_DIR, meta, out_dir)
    return sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())


def fit(tokenized_dir: Path, params: Params, out_dir: Path, history_out: Path,
        checkpoint_root: Path | None = None, curve_out: Path | None = None, history_csv: Path | None = None) -> dict:
    """Train, save the bundle to ``out_dir``, write the summary (and the training curve: plot, table)."""
    model, summary = train_model(tokenized_dir, params, checkpoint_root)
    if not distributed.is_main():
        return summary  # rank 0 writes the one bundle and report
    summary["adapter_bytes"] = save_trained(model, summary, params, tokenized_dir, out_dir)
    summary["base_bytes"] = sum(f.stat().st_size for f in resolve_base(params.model.base).glob("*.safetensors"))
    history_out.parent.mkdir(parents=True, exist_ok=True)
    history_out.write_text(json.dumps(summary, indent=2))
    if curve_out is not None:
        plot_curve(summary["history"], curve_out, title=f"{params.peft.method}: best epoch {summary['best_epoch']}")
    if history_csv is not None:
        write_history(summary["history"], history_csv)
    return summary
