"""Training, the adapter bundle and its base-model pin, on a tiny BERT built in the test."""

import json
from pathlib import Path

import numpy as np
import pytest

from finsent.bundle import load_bundle, predict_proba, read_meta
from finsent.config import ModelParams, Params, PeftParams, SplitParams, TrainParams, ValidationParams
from finsent.data.split import split
from finsent.data.validate import validate
from finsent.errors import FinsentError
from finsent.features import tokenize
from finsent.train.fit import fit

from conftest import LABELS, ingest_frame, sentences


def _params(base: Path, method: str = "lora", epochs: int = 3) -> Params:
    return Params(model=ModelParams(base=str(base), max_length=32),
                  peft=PeftParams(method=method, lora_r=4, lora_alpha=8),
                  train=TrainParams(epochs=epochs, batch_size=8, learning_rate=5e-3, num_threads=1),
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


@pytest.mark.parametrize("method", ["lora", "head_only"])
def test_fit_saves_a_small_bundle_that_reloads_to_identical_logits(tmp_path, tiny_base, tokenized, method):
    import torch

    params = _params(tiny_base, method)
    summary = fit(tokenized, params, tmp_path / "adapter", tmp_path / "train.json")
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert 0 < summary["trainable_params"] < summary["total_params"]
    meta = read_meta(tmp_path / "adapter")
    assert meta["base_model"]["path"] == str(tiny_base)
    assert len(meta["base_model"]["weights_sha256"]) == 64
    assert not list((tmp_path / "adapter").glob("model.safetensors")), "the base weights must not be copied"

    first, tokenizer, _ = load_bundle(tmp_path / "adapter")
    second, _, _ = load_bundle(tmp_path / "adapter")
    batch = tokenizer(["profit rose to a record", "shares fell after a loss"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.equal(first(**batch).logits, second(**batch).logits)
    probabilities = predict_proba(first, tokenizer, ["profit rose", "the company will report"], 32)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1.0)


def test_lora_trains_head_and_adapter_only(tmp_path, tiny_base, tokenized):
    summary = fit(tokenized, _params(tiny_base, "lora", epochs=1), tmp_path / "adapter", tmp_path / "t.json")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and "classifier" in config["modules_to_save"]
    assert summary["trainable_pct"] < 100


def test_same_seed_same_adapter_bytes(tmp_path, tiny_base, tokenized):
    params = _params(tiny_base, "lora", epochs=2)
    runs = [fit(tokenized, params, tmp_path / name, tmp_path / f"{name}.json") for name in ("a", "b")]
    assert runs[0]["history"] == runs[1]["history"]
    weights = [(tmp_path / name / "adapter_model.safetensors").read_bytes() for name in ("a", "b")]
    assert weights[0] == weights[1]


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
