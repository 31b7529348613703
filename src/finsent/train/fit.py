"""Train stage: fit the PEFT adapter (or head, or whole model) on the tokenized train split.

HF ``transformers.Trainer`` runs the loop: gradient accumulation, the LR schedule, bf16 autocast (through
accelerate) on a GPU that supports it, data-parallel training under torchrun (DDP, gloo on CPU), evaluation
after each epoch, checkpoints and their resume (optimizer, schedule, RNG states, the position in the epoch).
finsent adds what the Trainer does not know: its batch order (a seeded shuffle per epoch, optionally
length-grouped, so a resumed run replays the batches it would have seen), its loss (label smoothing, class
weights on top of the model's own loss, where AdaLoRA adds its orthogonality term), AdaLoRA's budget step,
the best epoch by validation macro-F1 with early stopping, and a checkpoint commit file (``checkpoint``)
that keeps a SIGKILL at any moment from leaving a checkpoint it cannot resume. Seeded so that the same
data + params give the same adapter bytes on the same machine.
"""

from __future__ import annotations

import dataclasses
import json
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
    """bf16 autocast (accelerate's mixed precision) on a GPU that supports it; full precision otherwise (CPU:
    fp32). The weights, optimizer state and saved adapter stay fp32 either way."""
    import torch

    return device.startswith("cuda") and torch.cuda.is_bf16_supported()


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


class Rows:
    """The tokenized rows as a dataset: (token ids, label id) by position."""

    def __init__(self, frame: pd.DataFrame):
        self.ids, self.labels = frame["input_ids"].tolist(), frame["label_id"].tolist()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, row: int) -> tuple:
        return self.ids[row], self.labels[row]


class PadCollator:
    """Rows -> one dynamically padded batch with its labels."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[tuple]) -> dict:
        import torch

        batch = pad_batch([ids for ids, _ in rows], self.pad_id)
        batch["labels"] = torch.tensor([label for _, label in rows], dtype=torch.long)
        return batch


class EpochBatches:
    """The training batch order, a pure function of (seed, epoch): a seeded shuffle, length-grouped when asked.
    The Trainer sets the epoch; under data-parallel training accelerate deals the batches out to the ranks."""

    drop_last = False

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group_by_length: bool):
        self.lengths, self.batch_size, self.seed, self.group_by_length = lengths, batch_size, seed, group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch + 1)  # the Trainer counts epochs from 0, the history from 1
        order = rng.permutation(len(self.lengths))
        if self.group_by_length:
            order = length_grouped(order, self.lengths, self.batch_size, rng)
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size].tolist()


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


@dataclasses.dataclass
class Progress:
    """What the run has done so far; a checkpoint holds it, so a resumed run continues its history, its
    per-step figures, its best epoch and the running loss of the epoch it stopped in."""

    history: list = dataclasses.field(default_factory=list)  # per epoch: train loss, validation loss, macro-F1
    steps: list = dataclasses.field(default_factory=list)  # per optimizer step: mean loss of its batches, rate used
    best_f1: float = -1.0
    best_state: dict | None = None  # the trainable weights of the best epoch so far
    since_best: int = 0
    epoch_loss: float = 0.0  # loss x rows and rows of the epoch so far (this process)
    epoch_rows: int = 0
    step_loss: float = 0.0
    step_rows: int = 0

    def add_batch(self, loss: float, rows: int) -> None:
        self.epoch_loss, self.epoch_rows = self.epoch_loss + loss * rows, self.epoch_rows + rows
        self.step_loss, self.step_rows = self.step_loss + loss * rows, self.step_rows + rows

    def close_step(self, step: int, learning_rate: float) -> None:
        self.steps.append({"step": step, "train_loss": self.step_loss / self.step_rows, "learning_rate": learning_rate})
        self.step_loss, self.step_rows = 0.0, 0

    def close_epoch(self, epoch: int, val_loss: float, val_f1: float, device) -> dict:
        train_loss = distributed.sum_across(self.epoch_loss, device) / distributed.sum_across(self.epoch_rows, device)
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_macro_f1": val_f1})
        self.epoch_loss, self.epoch_rows = 0.0, 0
        return self.history[-1]


def _trainer_class():
    """``Trainer`` with finsent's batches, loss, optimizer and checkpoint weights (built on first use: importing
    transformers' Trainer costs seconds)."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import Trainer

    class AdapterTrainer(Trainer):
        def __init__(self, *args, batches: EpochBatches, weights, label_smoothing: float, progress: Progress,
                     learning_rate: float, resume: dict | None, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches, self.weights, self.label_smoothing = batches, weights, label_smoothing
            self.progress, self.learning_rate, self.resume = progress, learning_rate, resume
            self.model_accepts_loss_kwargs = False  # compute_loss gives a batch mean: the Trainer scales it

        def _loader(self, dataset, **how):
            # its own generator: starting an epoch draws no number from the global RNG that drives dropout
            return self.accelerator.prepare(DataLoader(dataset, collate_fn=self.data_collator,
                                                       generator=torch.Generator(), **how))

        def get_train_dataloader(self):
            return self._loader(self.train_dataset, batch_sampler=self.batches)

        def get_eval_dataloader(self, eval_dataset=None):
            return self._loader(self.eval_dataset, batch_size=self.args.per_device_eval_batch_size)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            output = model(**inputs)
            if model.training:
                loss = _loss(output, inputs["labels"], self.weights, self.label_smoothing)
                self.progress.add_batch(loss.item(), len(inputs["labels"]))
            else:
                loss = output.loss  # validation: the plain cross-entropy, comparable between recipes
            return (loss, output) if return_outputs else loss

        # Two figures the Trainer computes every step only to log them, and finsent logs neither (logging_strategy
        # "no"): the gradient norm (clipping is off, max_grad_norm 0) walks every parameter, frozen ones too, and
        # the FLOP count every weight; 2.2 ms a step of a LoRA run on 2 CPU cores, 1 % of the step.
        def _get_grad_norm(self, model, grad_norm=None):
            return grad_norm

        def floating_point_ops(self, inputs) -> int:
            return 0

        def create_optimizer(self, model=None):
            if self.optimizer is None:  # AdamW on the trainable weights only, weight decay on all of them
                self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                                   lr=self.learning_rate, weight_decay=self.args.weight_decay)
            return self.optimizer

        def save_model(self, output_dir=None, _internal_call=False):
            if _internal_call:  # a checkpoint's weights go into finsent's commit file (see _load_from_checkpoint)
                Path(output_dir).mkdir(parents=True, exist_ok=True)
            else:
                super().save_model(output_dir, _internal_call)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """The weights come from the commit file: AdaLoRA saves an adapter cut to its rank budget, which the
            model in training cannot load, and the file is written only once the Trainer's checkpoint is complete."""
            checkpoint.restore(self.resume, model or self.model)

    return AdapterTrainer


def _callback_class():
    from transformers import TrainerCallback

    class FinsentSteps(TrainerCallback):
        """finsent's part of each step and epoch: AdaLoRA's budget step, the per-step record, the progress bar,
        checkpoints at epoch ends, the best epoch, early stopping and the caller's per-epoch hook."""

        def __init__(self, params: Params, progress: Progress, steps_per_epoch: int, folder: Path | None, bar,
                     on_epoch):
            self.params, self.progress, self.steps_per_epoch, self.folder = params, progress, steps_per_epoch, folder
            self.bar, self.on_epoch = bar, on_epoch
            self.seconds, self.rows = 0.0, 0  # training throughput of this process: its batches, no validation
            self.epoch_started, self.rows_before = 0.0, 0

        def on_train_begin(self, args, state, control, **kwargs):
            rank, _, world_size = distributed.world()
            if world_size > 1:
                import torch

                torch.manual_seed(args.seed + rank)  # own dropout masks per rank (DDP synced the initial weights)

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.epoch_started, self.rows_before = time.perf_counter(), self.progress.epoch_rows  # >0 when resumed

        def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
            step = state.global_step + 1  # the Trainer counts this step once the schedule has moved
            self.progress.close_step(step, optimizer.param_groups[0]["lr"])
            after_optimizer_step(model, self.params.peft, step)  # reads the gradients: before they are zeroed

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(1)
            if state.global_step % self.steps_per_epoch == 0:
                control.should_save = False  # an epoch's end is checkpointed after its validation

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.epoch_started
            self.rows += self.progress.epoch_rows - self.rows_before
            control.should_save = self.folder is not None and round(state.epoch) < args.num_train_epochs

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            progress = self.progress
            entry = progress.close_epoch(round(state.epoch), metrics["eval_loss"], metrics["eval_macro_f1"],
                                         args.device)
            self.bar.set_postfix(epoch=entry["epoch"], val_f1=f"{entry['val_macro_f1']:.3f}")
            if self.on_epoch is not None:
                self.on_epoch(entry)
            if entry["val_macro_f1"] > progress.best_f1:
                progress.best_f1, progress.since_best = entry["val_macro_f1"], 0
                progress.best_state = {n: p.detach().cpu().clone() for n, p in model.named_parameters()
                                       if p.requires_grad}
            else:
                progress.since_best += 1
            patience = self.params.train.early_stopping_patience
            if patience and progress.since_best >= patience:
                print(f"train: early stop after epoch {entry['epoch']} ({progress.since_best} epochs without a better "
                      "validation macro-F1)")
                control.should_training_stop, control.should_save = True, False

        def on_save(self, args, state, control, model=None, **kwargs):
            if self.folder is not None and state.is_world_process_zero:
                checkpoint.commit(self.folder, f"checkpoint-{state.global_step}", model, self.progress)

    return FinsentSteps


def _macro_f1(prediction) -> dict:
    return {"macro_f1": float(f1_score(prediction.label_ids, prediction.predictions.argmax(-1), average="macro"))}


def train_model(tokenized_dir: Path, params: Params, checkpoint_root: Path | None = None, on_epoch=None,
                show_progress: bool = True):
    """-> (trained model with the best epoch's weights, on CPU; summary). Resumes from a checkpoint if one fits.
    ``on_epoch(entry)`` is called with each epoch's history entry (``finsent tune`` reports it to its pruner,
    which may stop the training by raising)."""
    import tempfile

    import torch
    from tqdm.auto import tqdm
    from transformers import PrinterCallback, TrainingArguments

    started = time.perf_counter()
    cfg = params.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    _, _, world_size = distributed.world()
    tokenizer = load_tokenizer(tokenized_dir / TOKENIZER_DIR)
    train = pd.read_parquet(tokenized_dir / "train.parquet")
    val = pd.read_parquet(tokenized_dir / "val.parquet")
    identity = base_identity(params.model.base)
    batches = EpochBatches(train["input_ids"].map(len).to_numpy(), cfg.batch_size, cfg.seed, cfg.group_by_length)
    steps_per_epoch = -(-(-(-len(batches) // world_size)) // cfg.grad_accum_steps)  # accelerate deals whole batches
    total_steps = cfg.epochs * steps_per_epoch
    learning_rate = params.peft.settings.learning_rate or cfg.learning_rate

    folder = None
    if checkpoint_root is not None and cfg.checkpoint_every_steps and world_size == 1:
        sections = {k: params.as_dict()[k] for k in ("labels", "model", "peft", "train")}
        folder = Path(checkpoint_root) / checkpoint.run_key(tokenized_dir, sections)
    resume = checkpoint.load(folder) if folder else None
    progress = Progress(**resume["progress"]) if resume else Progress()
    resumed_from = int(resume["checkpoint"].rsplit("-", 1)[1]) if resume else 0
    if resumed_from:
        print(f"train: resuming from checkpoint at step {resumed_from}/{total_steps} "
              f"(epoch {resumed_from // steps_per_epoch + 1})")

    scratch = None if folder else tempfile.mkdtemp(prefix="finsent-train-")
    args = TrainingArguments(
        output_dir=str(folder or scratch), seed=cfg.seed, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size * 2,
        gradient_accumulation_steps=cfg.grad_accum_steps, weight_decay=cfg.weight_decay, max_grad_norm=0.0,
        lr_scheduler_type=SCHEDULES[cfg.lr_schedule], warmup_steps=int(cfg.warmup_ratio * total_steps),
        eval_strategy="epoch", save_strategy="steps" if folder else "no", save_steps=cfg.checkpoint_every_steps or 1,
        logging_strategy="no", report_to="none", disable_tqdm=True, label_names=["labels"],
        remove_unused_columns=False, bf16=uses_bf16(device), use_cpu=device == "cpu",
        ddp_backend="gloo" if world_size > 1 and device == "cpu" else None, ddp_find_unused_parameters=False)
    bar = tqdm(total=total_steps, initial=resumed_from, desc="train", unit="step",
               disable=not (show_progress and distributed.is_main()))
    steps = _callback_class()(params, progress, steps_per_epoch, folder, bar, on_epoch)
    trainer = _trainer_class()(
        model_init=lambda: build_trainable(resolve_base(params.model.base), params.labels, params.peft, total_steps,
                                           params.model.pooling),  # the Trainer seeds, then builds: a seeded init
        args=args, train_dataset=Rows(train), eval_dataset=Rows(val), data_collator=PadCollator(tokenizer.pad_token_id),
        compute_metrics=_macro_f1, callbacks=[steps], batches=batches, label_smoothing=cfg.label_smoothing,
        weights=(class_weights(train["label_id"].to_numpy(), len(params.labels)).to(args.device)
                 if cfg.class_weighting == "balanced" else None),
        progress=progress, learning_rate=learning_rate, resume=resume)
    trainer.remove_callback(PrinterCallback)  # finsent prints its own lines
    try:
        trainer.train(resume_from_checkpoint=str(folder / resume["checkpoint"]) if resume else None)
    finally:
        bar.close()
        if scratch:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).cpu()  # no autocast left
    sizes = count_parameters(model)
    model.load_state_dict(progress.best_state, strict=False)
    after_best_weights_restored(model, params.peft)
    model.eval()
    history = progress.history
    summary = {"history": history, "steps": progress.steps,
               "best_epoch": max(history, key=lambda h: h["val_macro_f1"])["epoch"],
               "best_val_macro_f1": progress.best_f1, "device": str(args.device), "base_model": identity,
               "method": params.peft.method, "learning_rate": learning_rate,
               "optimizer_steps": trainer.state.global_step,
               "resumed_from_step": resumed_from, "processes": world_size,
               "train_samples_per_s": steps.rows / steps.seconds if steps.seconds else None,
               "train_seconds": time.perf_counter() - started, **sizes}
    if folder and distributed.is_main():
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
