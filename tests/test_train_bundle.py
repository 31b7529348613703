"""Training, the adapter bundle and its base-model pin, on a tiny BERT built in the test."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from finsent.bundle import load_bundle, predict_proba, read_meta
from finsent.config import (AdaLoraParams, LoraParams, ModelParams, Params, PeftParams, PromptTuningParams, SplitParams,
                            TrainParams, ValidationParams)
from finsent.data.split import split
from finsent.data.validate import validate
from finsent.errors import FinsentError
from finsent.features import tokenize
from finsent.train.fit import fit, save_trained, train_model

from conftest import LABELS, ingest_frame, sentences


METHODS = ["lora", "adalora", "ia3", "prompt_tuning", "head_only", "full"]


def _params(base: Path, method: str = "lora", epochs: int = 3, **train) -> Params:
    peft = PeftParams(method=method, lora=LoraParams(r=4, alpha=8),
                      adalora=AdaLoraParams(init_r=4, target_r=2, delta_t=2),
                      prompt_tuning=PromptTuningParams(num_virtual_tokens=4, learning_rate=5e-2))
    return Params(model=ModelParams(base=str(base), max_length=32), peft=peft,
                  train=TrainParams(**{"epochs": epochs, "batch_size": 8, "learning_rate": 5e-3, "num_threads": 1,
                                       **train}),
                  split=SplitParams(seed=1), validation=ValidationParams(min_rows=10))


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, tiny_base):
    folder = tmp_path_factory.mktemp("data")
    ingest_frame(sentences(15), folder)
    validate(folder / "ingested.parquet", LABELS, ValidationParams(min_rows=10), folder / "accepted.parquet",
             folder / "q.parquet", folder / "r.json")
    split(folder / "accepted.parquet", SplitParams(seed=1), folder / "split")
    identity = tokenize(folder / "split", LABELS, ModelParams(base=str(tiny_base), max_length=32),
                        folder / "tokenized")
    assert identity["rows"] == {"train": 31, "val": 5, "test": 9}
    return folder / "tokenized"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_saves_and_reloads_to_identical_logits(tmp_path, tiny_base, tokenized, method):
    import torch

    params = _params(tiny_base, method)
    model, summary = train_model(tokenized, params)
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    assert (summary["trainable_params"] == summary["total_params"]) == (method == "full")
    save_trained(model, summary, params, tokenized, tmp_path / "adapter")
    meta = read_meta(tmp_path / "adapter")
    assert meta["method"] == method and meta["base_model"]["base"] == str(tiny_base) and "path" not in meta["base_model"]
    assert len(meta["base_model"]["weights_sha256"]) == 64
    assert not list((tmp_path / "adapter").glob("model.safetensors")), "the base weights must not be copied"

    loaded, tokenizer, _ = load_bundle(tmp_path / "adapter")
    batch = tokenizer(["profit rose to a record", "shares fell after a loss"], return_tensors="pt", padding=True)
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        before, after = model(**batch).logits, loaded(**batch).logits
    assert torch.equal(before, after)
    probabilities = predict_proba(loaded, tokenizer, ["profit rose", "the company will report"], 32)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1.0)


def test_fit_writes_summary_and_training_curve(tmp_path, tiny_base, tokenized):
    summary = fit(tokenized, _params(tiny_base, "lora", epochs=2), tmp_path / "adapter", tmp_path / "train.json",
                  curve_out=tmp_path / "curve.png")
    assert json.loads((tmp_path / "train.json").read_text())["adapter_bytes"] == summary["adapter_bytes"] > 0
    assert summary["adapter_bytes"] < summary["base_bytes"]
    assert summary["train_samples_per_s"] > 0  # training batches only (a benchmark figure, not asserted further)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_bf16_autocast_path_trains_and_saves_fp32(tmp_path, tiny_base, tokenized, monkeypatch):
    """The CUDA path (bf16 autocast in training and validation) forced on the CPU: only the device differs."""
    import torch

    import finsent.train.fit as fit_module

    monkeypatch.setattr(fit_module, "uses_bf16", lambda device: True)
    seen = set()
    original = fit_module.build_trainable

    def recording(*args, **kwargs):
        model = original(*args, **kwargs)
        head = next(m for n, m in model.named_modules() if n.endswith("classifier.modules_to_save.default"))
        head.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        return model

    monkeypatch.setattr(fit_module, "build_trainable", recording)
    params = _params(tiny_base, "lora", epochs=2)
    model, summary = train_model(tokenized, params)
    assert seen == {torch.bfloat16}, seen  # every forward pass ran under bf16 autocast
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in summary["history"])
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"] * 1.5
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast never casts the weights
    save_trained(model, summary, params, tokenized, tmp_path / "adapter")
    loaded, tokenizer, _ = load_bundle(tmp_path / "adapter")
    batch = tokenizer(["profit rose to a record"], return_tensors="pt")
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_training_options_accumulation_class_weights_early_stop(tiny_base, tokenized):
    params = _params(tiny_base, "lora", epochs=6, grad_accum_steps=2, class_weighting="balanced",
                     lr_schedule="cosine", early_stopping_patience=1, learning_rate=1e-9)
    _, summary = train_model(tokenized, params)
    assert summary["optimizer_steps"] == len(summary["history"]) * 2  # 4 batches per epoch, 2 per step
    assert len(summary["history"]) < 6, "a learning rate of 1e-9 cannot improve: early stopping must end the run"


def test_lora_trains_head_and_adapter_only(tmp_path, tiny_base, tokenized):
    summary = fit(tokenized, _params(tiny_base, "lora", epochs=1), tmp_path / "adapter", tmp_path / "t.json")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and {"classifier", "bert.pooler.dense"} <= set(config["modules_to_save"])
    assert summary["trainable_pct"] < 100


def test_head_only_saves_exactly_its_head(tmp_path, tiny_base, tokenized):
    from safetensors import safe_open

    fit(tokenized, _params(tiny_base, "head_only", epochs=1), tmp_path / "adapter", tmp_path / "t.json")
    with safe_open(str(tmp_path / "adapter" / "head.safetensors"), "pt") as saved:
        assert set(saved.keys()) == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight",
                                     "bert.pooler.dense.bias"}


def test_head_modules_the_base_lacks_are_skipped_and_none_at_all_is_an_error(tiny_base):
    from finsent.train.methods import build_trainable

    params = PeftParams(method="head_only", head_modules=["classifier", "pre_classifier"])
    model = build_trainable(tiny_base, LABELS, params, total_steps=1)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    with pytest.raises(FinsentError, match="none of peft.head_modules"):
        build_trainable(tiny_base, LABELS, PeftParams(method="lora", head_modules=["score"]), total_steps=1)


def test_a_base_stored_in_half_precision_trains_in_fp32(tmp_path, tiny_base):
    """Hub models often ship bf16/fp16 weights; transformers 5 would keep that dtype, and AdamW on half-precision
    weights loses small updates."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from finsent.train.methods import build_trainable

    half = tmp_path / "half_base"
    shutil.copytree(tiny_base, half)
    weights = load_file(str(half / "model.safetensors"))
    save_file({name: value.to(torch.bfloat16) for name, value in weights.items()}, str(half / "model.safetensors"),
              metadata={"format": "pt"})
    config = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))  # as such a checkpoint says
    model = build_trainable(half, LABELS, PeftParams(method="lora"), total_steps=1)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_lora_on_upper_layers_only_leaves_the_lower_layers_untouched(tiny_base):
    """peft.lora.layers: updates only in the layers listed (-1: the top one); the layers below train nothing, so
    the backward pass never reaches them."""
    import torch

    from finsent.train.methods import build_trainable

    model = build_trainable(tiny_base, LABELS, PeftParams(method="lora", lora=LoraParams(layers=[-1])), total_steps=1)
    adapted = {name.split("layer.")[1].split(".")[0] for name, _ in model.named_parameters() if "lora_" in name}
    assert adapted == {"1"}
    batch = {"input_ids": torch.tensor([[2, 7, 8, 9, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    hidden = {}
    model.base_model.model.bert.encoder.layer[0].register_forward_hook(lambda m, i, out: hidden.setdefault("0", out))
    model(**batch, labels=torch.tensor([1])).loss.backward()
    output = hidden["0"][0] if isinstance(hidden["0"], tuple) else hidden["0"]
    assert not output.requires_grad  # layer 0 ran outside autograd's graph
    for layers, message in (([2, -3], r"\[-3, 2\] are not layers of this base; its encoder has 2 \(0 to 1, or -2 to -1"),
                            ([], "is empty")):
        with pytest.raises(FinsentError, match=message):
            build_trainable(tiny_base, LABELS, PeftParams(method="lora", lora=LoraParams(layers=layers)), total_steps=1)


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_lora_dropout_draws_the_cheap_mask_with_torchs_p_and_scale(tiny_base, method):
    """Every LoRA dropout of a trainable model is a WordDropout with the configured p: it drops that share of
    the elements, scales the kept ones by 1 / (1 - p) (so the mean is kept), repeats under the same seed, and
    lets the gradient through exactly where it kept an element."""
    import torch

    from finsent.train.dropout import WordDropout
    from finsent.train.methods import build_trainable

    model = build_trainable(tiny_base, LABELS, PeftParams(method=method), total_steps=10)
    dropouts = [layer for module in model.modules() if isinstance(getattr(module, "lora_dropout", None),
                                                                    torch.nn.ModuleDict)
                for layer in module.lora_dropout.values()]
    assert dropouts and all(isinstance(layer, WordDropout) and layer.p == 0.1 for layer in dropouts)

    drop = WordDropout(0.1).train()
    x = torch.ones(400, 1001, requires_grad=True)  # an element count not a multiple of four
    torch.manual_seed(3)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.1) < 0.003 and abs(y.mean().item() - 1.0) < 0.004
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum)/dx: the same mask and scale
    assert drop.eval()(x) is x and WordDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        WordDropout(1.0)


def test_target_modules_the_base_lacks_name_the_layers_it_has(tiny_base):
    from finsent.train.methods import build_trainable

    params = PeftParams(method="lora", lora=LoraParams(target_modules=["q_lin", "v_lin"]))  # DistilBERT's names
    with pytest.raises(FinsentError, match=r"peft.lora.target_modules \['q_lin', 'v_lin'\] match no layer.*query"):
        build_trainable(tiny_base, LABELS, params, total_steps=1)


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_same_data_params_seed_give_same_metrics_and_adapter_hash(tmp_path, tiny_base, tokenized, method):
    import hashlib

    params = _params(tiny_base, method, epochs=2)
    runs = [fit(tokenized, params, tmp_path / name, tmp_path / f"{name}.json") for name in ("a", "b")]
    for first, second in zip(runs[0]["history"], runs[1]["history"]):
        assert first.keys() == second.keys()
        assert all(abs(first[k] - second[k]) <= 1e-6 for k in first)
    digests = [hashlib.sha256((tmp_path / name / "adapter_model.safetensors").read_bytes()).hexdigest()
               for name in ("a", "b")]
    assert digests[0] == digests[1]


def test_same_training_gives_the_same_bundle_bytes_in_any_process(tmp_path, tiny_base, tokenized):
    """Bundle bytes (the registry fingerprint) must not depend on the process's string-hash seed."""
    import os
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from finsent.config import *; from finsent.train.fit import fit; "
              "params = Params(labels=['negative', 'neutral', 'positive'], "
              "model=ModelParams(base=sys.argv[1], max_length=32), train=TrainParams(epochs=1, batch_size=8)); "
              "fit(Path(sys.argv[2]), params, Path(sys.argv[3]), Path(sys.argv[3] + '.json'))")
    for seed in ("1", "6"):  # seeds under which the module-name sets iterate in different orders
        subprocess.run([sys.executable, "-c", script, str(tiny_base), str(tokenized), str(tmp_path / seed)],
                       check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed})
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "6") for p in (tmp_path / "6").rglob("*") if p.is_file())
    assert [f for f in files if (tmp_path / "1" / f).read_bytes() != (tmp_path / "6" / f).read_bytes()] == []


def test_loading_refuses_different_base_weights(tmp_path, tiny_base, tokenized):
    import shutil

    base_copy = tmp_path / "base"
    shutil.copytree(tiny_base, base_copy)
    fit(tokenized, _params(base_copy, "lora", epochs=1), tmp_path / "adapter", tmp_path / "t.json")
    weights = base_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(FinsentError, match="differ from the ones this adapter was trained on"):
        load_bundle(tmp_path / "adapter")


CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import finsent.train.fit as fit_module
from test_train_bundle import _params

kill_at = int(sys.argv[1])
original = fit_module.after_optimizer_step
def step_then_maybe_die(model, peft, step):
    original(model, peft, step)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as hard as a kill gets
fit_module.after_optimizer_step = step_then_maybe_die
params = _params(Path({base!r}), "lora", epochs=6, checkpoint_every_steps=5)
summary = fit_module.fit(Path({tokenized!r}), params, Path({out!r}), Path({out!r} + ".json"), checkpoint_root=Path({ckpt!r}))
print("resumed_from_step", summary["resumed_from_step"])
"""


def test_training_killed_by_sigkill_resumes_from_its_last_checkpoint(tmp_path, tiny_base, tokenized):
    import subprocess
    import sys

    script = CHILD.format(tests=str(Path(__file__).parent), base=str(tiny_base), tokenized=str(tokenized),
                          out=str(tmp_path / "resumed"), ckpt=str(tmp_path / "checkpoints"))
    # 4 batches per epoch: checkpoints after steps 4 (epoch end), 5, 8 (epoch end), 10; killed during step 11
    killed = subprocess.run([sys.executable, "-c", script, "11"], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list((tmp_path / "checkpoints").glob("*/last.pt")), "the killed run left no checkpoint"
    resumed = subprocess.run([sys.executable, "-c", script, "0"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint at step 10/24" in resumed.stdout
    assert "resumed_from_step 10" in resumed.stdout
    assert not list((tmp_path / "checkpoints").glob("*/last.pt")), "a finished run must remove its checkpoint"

    reference = fit(tokenized, _params(tiny_base, "lora", epochs=6), tmp_path / "straight", tmp_path / "s.json")
    history = json.loads((tmp_path / "resumed.json").read_text())["history"]
    assert abs(history[-1]["val_macro_f1"] - reference["history"][-1]["val_macro_f1"]) <= 0.005
    assert [round(h["train_loss"], 6) for h in history] == [round(h["train_loss"], 6) for h in reference["history"]]
    assert ((tmp_path / "resumed" / "adapter_model.safetensors").read_bytes()
            == (tmp_path / "straight" / "adapter_model.safetensors").read_bytes()), "resume must replay exactly"


def test_train_stage_runs_data_parallel_under_torchrun(tmp_path, tiny_base, tokenized):
    """train.processes: 2 makes `finsent stage train` re-launch itself under torchrun (gloo on CPU here, NCCL
    on GPUs): two ranks each train on half of every epoch, rank 0 alone writes the bundle and the report."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    import psutil
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "labels": LABELS, "model": {"base": str(tiny_base), "max_length": 32},
        "peft": {"method": "lora", "lora": {"r": 4, "alpha": 8}},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "num_threads": 1, "processes": 2}}))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    finsent = Path(sys.executable).with_name("finsent")
    done = subprocess.Popen([str(finsent), "stage", "train", "--input", str(tokenized), "--out", "adapter",
                             "--report", "train.json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})
    launcher = psutil.Process(done.pid)
    try:
        stdout, stderr = done.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # torchrun starts each rank in its own session: signal the whole tree
        tree = [launcher, *launcher.children(recursive=True)]
        for process in tree:  # each prints where it waits (faulthandler), then goes
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGABRT)
        psutil.wait_procs(tree, timeout=30)
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.kill()
        stdout, stderr = done.communicate(timeout=30)
        pytest.fail(f"data-parallel training still running after 300 s; stacks:\n{stderr[-12000:]}")
    assert done.returncode == 0, stderr[-3000:]
    assert "data-parallel on 2 processes" in stdout
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["processes"] == 2
    assert summary["optimizer_steps"] == 2 * 2  # 31 rows -> 16 per rank -> 2 batches of 8 per epoch
    model, tokenizer, meta = load_bundle(tmp_path / "adapter")
    assert meta["method"] == "lora"
    assert predict_proba(model, tokenizer, ["profit rose"], 32).shape == (1, 3)


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt_tuning"])
def test_merged_export_is_a_plain_transformers_model_with_the_same_predictions(tmp_path, tiny_base, tokenized,
                                                                                 capsys, method):
    import torch
    from transformers import AutoModelForSequenceClassification

    from finsent.cli import main

    params = _params(tiny_base, method, epochs=1)  # cls pooling: the export is a stock transformers model
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, pooling="cls"))
    fit(tokenized, params, tmp_path / "adapter", tmp_path / "t.json")
    code = main(["export", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged")])
    if method == "prompt_tuning":
        assert code == 2 and "cannot be merged" in capsys.readouterr().err
        return
    assert code == 0 and "plain transformers model" in capsys.readouterr().out
    bundle, tokenizer, _ = load_bundle(tmp_path / "adapter")
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged")).eval()
    batch = tokenizer(["profit rose to a record", "shares fell after a loss"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.allclose(bundle(**batch).logits, merged(**batch).logits, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_mean_pooling_ignores_padding_and_reloads_to_identical_logits(tmp_path, tiny_base, tokenized, method):
    import torch

    params = _params(tiny_base, method, epochs=1)
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, pooling="mean"))
    model, summary = train_model(tokenized, params)
    save_trained(model, summary, params, tokenized, tmp_path / "adapter")
    assert read_meta(tmp_path / "adapter")["pooling"] == "mean"
    loaded, tokenizer, _ = load_bundle(tmp_path / "adapter")
    texts = ["profit rose to a record of eur mn in the quarter", "shares fell"]
    padded = tokenizer(texts, return_tensors="pt", padding=True)
    alone = tokenizer(texts[1:], return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(model(**padded).logits, loaded(**padded).logits)
        # the mean runs over real tokens only: padding a sentence does not change its logits
        assert torch.allclose(loaded(**padded).logits[1], loaded(**alone).logits[0], atol=1e-5)


def test_mean_pooled_merged_export_reloads_with_its_pooling(tmp_path, tiny_base, tokenized, capsys):
    import torch

    from finsent.bundle import load_exported
    from finsent.cli import main

    params = _params(tiny_base, "lora", epochs=1)
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, pooling="mean"))
    fit(tokenized, params, tmp_path / "adapter", tmp_path / "t.json")
    assert main(["export", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    assert "load_exported" in capsys.readouterr().out
    bundle, tokenizer, _ = load_bundle(tmp_path / "adapter")
    merged, _ = load_exported(tmp_path / "merged")
    folded, _, _ = load_bundle(tmp_path / "adapter", merged=True)  # what the scorers serve
    assert not any("lora" in name for name, _ in folded.named_parameters())
    batch = tokenizer(["profit rose to a record", "shares fell after a loss"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.allclose(bundle(**batch).logits, merged(**batch).logits, atol=1e-5)
        assert torch.allclose(bundle(**batch).logits, folded(**batch).logits, atol=1e-5)


def test_length_grouped_batches_keep_every_row_and_pad_less():
    from finsent.train.fit import length_grouped

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    order = rng.permutation(1000)
    grouped = length_grouped(order, lengths, 16, np.random.default_rng(1))
    assert sorted(grouped) == list(range(1000))  # the same rows, each once

    def padding(sequence):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum())
                   for b in (sequence[i:i + 16] for i in range(0, len(sequence), 16)))

    assert padding(grouped) < padding(order) / 3


def test_label_smoothing_and_length_grouping_train(tiny_base, tokenized):
    _, plain = train_model(tokenized, _params(tiny_base, "lora", epochs=1))
    _, smoothed = train_model(tokenized, _params(tiny_base, "lora", epochs=1, label_smoothing=0.2,
                                                 group_by_length=True))
    assert np.isfinite(smoothed["history"][0]["train_loss"])
    assert smoothed["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    assert smoothed["optimizer_steps"] == plain["optimizer_steps"]  # the same rows in the same number of batches


def test_every_trainer_method_finsent_overrides_is_one_the_trainer_still_calls():
    """finsent's Trainer replaces some of transformers' Trainer methods (private ones too: the checkpoint weights,
    the per-step gradient norm nobody logs). Should an upgrade rename one, the override would be dead code and the
    behaviour it changes would silently come back; this names it instead."""
    import inspect

    from transformers import Trainer

    from finsent.train.fit import _trainer_class

    trainer_source = inspect.getsource(Trainer)
    overridden = [name for name, member in vars(_trainer_class()).items()
                  if callable(member) and not name.startswith("__") and name != "_loader"]  # _loader: finsent's own
    assert {"_get_grad_norm", "floating_point_ops", "_load_from_checkpoint", "compute_loss"} <= set(overridden)
    for name in overridden:
        assert callable(getattr(Trainer, name, None)), f"transformers' Trainer has no method {name}"
        assert f"self.{name}(" in trainer_source, f"transformers' Trainer never calls self.{name}()"
