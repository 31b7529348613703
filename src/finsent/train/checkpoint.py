"""Resumable training state: a run killed mid-training (even by SIGKILL) continues where it stopped.

The Trainer's checkpoint folder (``checkpoint-<step>``) holds the optimizer, the LR schedule, the RNG
states and the position (optimizer step, epoch); the commit file ``last.pt`` beside it holds the
rest of what the loop's future depends on: the trainable weights, method state (AdaLoRA's importance
scores and rank pattern) and the run's progress (history, best-so-far weights, the epoch's running loss),
with the name of the checkpoint folder it goes with. It is replaced atomically once that folder is
complete, and only then are older folders removed, so a kill at any moment leaves one whole checkpoint.
The batch order is a pure function of (seed, epoch), so a resumed run replays exactly the batches it
would have seen: it ends with the same weights as an uninterrupted one. Checkpoints live under a key of
(training data, params) so a changed input never resumes a stale run; they are removed once training
finishes.
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


def commit(folder: Path, checkpoint_name: str, model, progress) -> None:
    """Record the Trainer's complete checkpoint ``checkpoint_name`` with the weights, method state and progress,
    then remove the checkpoints it replaces."""
    import dataclasses

    import torch

    state = {"checkpoint": checkpoint_name, "progress": dataclasses.asdict(progress),
             "weights": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
             "method": _method_state(model)}
    partial = folder / (CHECKPOINT_FILE + ".partial")
    torch.save(state, partial)
    os.replace(partial, folder / CHECKPOINT_FILE)  # a kill mid-write leaves the previous commit intact
    for older in folder.glob("checkpoint-*"):
        if older.name != checkpoint_name:
            shutil.rmtree(older, ignore_errors=True)


def load(folder: Path) -> dict | None:
    """The last committed checkpoint (weights, method state, progress, Trainer folder), or None when there is
    none or its Trainer folder is gone."""
    import torch

    file = folder / CHECKPOINT_FILE
    if not file.is_file():
        return None
    state = torch.load(file, map_location="cpu", weights_only=True)
    return state if (folder / state["checkpoint"]).is_dir() else None


def restore(state: dict, model) -> None:
    """Put a committed checkpoint's weights and method state into ``model``."""
    model.load_state_dict(state["weights"], strict=False)
    _restore_method_state(model, dict(state["method"]))


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
