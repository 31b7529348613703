"""Train stage: fit the PEFT adapter (or head) on the tokenized train split.

A plain PyTorch loop: AdamW on the trainable parameters only, linear schedule with warmup,
dynamically padded batches, validation loss and macro-F1 after each epoch, and the best epoch
(by validation macro-F1) kept. Seeded so that the same data + params give the same adapter.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from finsent.base_model import base_identity
from finsent.bundle import save_bundle
from finsent.config import Params
from finsent.errors import FinsentError
from finsent.features import TOKENIZER_DIR, load_tokenizer
from finsent.train.methods import build_trainable, count_parameters


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise FinsentError("train.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return requested


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


def _batches(frame: pd.DataFrame, batch_size: int, tokenizer, shuffle_seed: int | None):
    import torch

    order = np.arange(len(frame))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(frame))
    for start in range(0, len(order), batch_size):
        rows = frame.iloc[order[start:start + batch_size]]
        yield pad_batch(rows["input_ids"].tolist(), tokenizer.pad_token_id), torch.tensor(rows["label_id"].to_numpy())


def _to(batch: dict, device: str) -> dict:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _evaluate(model, frame: pd.DataFrame, tokenizer, batch_size: int, device: str) -> tuple[float, float]:
    import torch

    model.eval()
    losses, predictions = [], []
    with torch.inference_mode():
        for inputs, labels in _batches(frame, batch_size, tokenizer, None):
            output = model(**_to(inputs, device), labels=labels.to(device))
            losses.append(float(output.loss) * len(labels))
            predictions.extend(output.logits.argmax(-1).cpu().tolist())
    return sum(losses) / len(frame), float(f1_score(frame["label_id"], predictions, average="macro"))


def fit(tokenized_dir: Path, params: Params, out_dir: Path, history_out: Path) -> dict:
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    cfg = params.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(tokenized_dir / TOKENIZER_DIR)
    train = pd.read_parquet(tokenized_dir / "train.parquet")
    val = pd.read_parquet(tokenized_dir / "val.parquet")
    identity = base_identity(params.model.base)
    model = build_trainable(Path(identity["path"]), params.labels, params.peft).to(device)
    sizes = count_parameters(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)

    history, best_f1, best_state = [], -1.0, None
    progress = tqdm(total=steps, desc="train", unit="step")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        running = 0.0
        for inputs, labels in _batches(train, cfg.batch_size, tokenizer, cfg.seed + epoch):
            loss = model(**_to(inputs, device), labels=labels.to(device)).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item() * len(labels)
            progress.update(1)
        val_loss, val_f1 = _evaluate(model, val, tokenizer, cfg.batch_size * 2, device)
        history.append({"epoch": epoch, "train_loss": running / len(train), "val_loss": val_loss,
                        "val_macro_f1": val_f1})
        progress.set_postfix(epoch=epoch, val_f1=f"{val_f1:.3f}")
        if val_f1 > best_f1:
            best_f1 = val_f1
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    progress.close()
    model.load_state_dict(best_state, strict=False)
    best_epoch = max(history, key=lambda h: h["val_macro_f1"])["epoch"]

    meta = {"method": params.peft.method, "labels": list(params.labels), "max_length": params.model.max_length,
            "base_model": identity, "best_epoch": best_epoch, "device": device, **sizes}
    save_bundle(model.cpu(), tokenized_dir / TOKENIZER_DIR, meta, out_dir)
    summary = {"history": history, "best_epoch": best_epoch, "best_val_macro_f1": best_f1, "device": device,
               "base_model": identity, **sizes,
               "adapter_bytes": sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())}
    history_out.parent.mkdir(parents=True, exist_ok=True)
    history_out.write_text(json.dumps(summary, indent=2))
    return summary
