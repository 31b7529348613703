"""Resumable training state: a run killed mid-training (even by SIGKILL) continues where it stopped.

A checkpoint holds everything the loop's future depends on: trainable weights, optimizer and LR
schedule, the position (optimizer step, epoch, batch within the epoch), the epoch's running loss,
the history and best-so-far weights, the torch RNG state (dropout), and method state (AdaLoRA's
importance scores). The batch order is a pure function of (seed, epoch), so a resumed run
replays exactly the batches it would have seen: it ends with the same weights as an
uninterrupted one. Checkpoints live under a key of (training data, params) so a changed input
never resumes a stale run; they are written atomically and removed once training finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

CHECKPOINT_FILE = "last.pt"


def run_key(tokenized_dir: Path, params_sections: dict) -> str:
    """What a checkpoint may be resumed for: the tokenized data bytes and the params that shape training."""
    digest = hashlib.sha256(json.dumps(params_sections, sort_keys=True, default=str).encode())
    for file in sorted(p for p in Path(tokenized_dir).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(tokenized_dir)).encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _method_state(model) -> dict:
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is None:
        return {}
    state = {name: dict(getattr(allocator, name)) for name in ("ipt", "exp_avg_ipt", "exp_avg_unc")}
    return {**state, "rank_pattern": model.peft_config["default"].rank_pattern}  # fixed once pruning ends


def _restore_method_state(model, state: dict) -> None:
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is None:
        return
    model.peft_config["default"].rank_pattern = state.pop("rank_pattern", None)
    for name, values in state.items():
        getattr(allocator, name).update(values)


def save(folder: Path, model, optimizer, scheduler, position: dict) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    state = {"weights": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "method": _method_state(model), "position": position}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    partial = folder / (CHECKPOINT_FILE + ".partial")
    torch.save(state, partial)
    os.replace(partial, folder / CHECKPOINT_FILE)  # a kill mid-write leaves the previous checkpoint intact


def load(folder: Path, model, optimizer, scheduler) -> dict | None:
    """Restore the last checkpoint into the given objects -> its position, or None when there is none."""
    import torch

    file = folder / CHECKPOINT_FILE
    if not file.is_file():
        return None
    state = torch.load(file, map_location="cpu", weights_only=True)
    model.load_state_dict(state["weights"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    _restore_method_state(model, state["method"])
    return state["position"]


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
