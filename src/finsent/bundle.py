"""The adapter bundle: what a trained finsent model is on disk, and how to run it.

models/adapter/
  adapter_model.safetensors + adapter_config.json   (PEFT methods; the head is inside)
  head.safetensors                                  (head_only)
  full_model.safetensors                            (full: every weight was trained)
  tokenizer/                                        tokenizer files
  finsent_model.json                                method, labels, max_length, pooling, base identity
No copy of the base weights (except for ``full``, where they are the model): they are found again
from the identity and checked by sha256.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from finsent.base_model import verified_base_path
from finsent.features import TOKENIZER_DIR
from finsent.train.methods import load_base_classifier

META_FILE = "finsent_model.json"
HEAD_FILE = "head.safetensors"
FULL_FILE = "full_model.safetensors"
WEIGHT_FILES = {"head_only": HEAD_FILE, "full": FULL_FILE}  # methods saved as plain safetensors, not by PEFT
MERGEABLE = ("lora", "adalora", "ia3")  # PEFT methods whose adapter folds into the base weights


def save_bundle(model, tokenizer_dir: Path, meta: dict, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if meta["method"] in WEIGHT_FILES:
        from safetensors.torch import save_file

        trained = {name for name, p in model.named_parameters() if p.requires_grad}  # head_only: its head
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                   if meta["method"] == "full" or k in trained}
        save_file(weights, str(out_dir / WEIGHT_FILES[meta["method"]]))
    else:
        machine_path = getattr(model.peft_config.get("default"), "base_model_name_or_path", None)
        model.save_pretrained(str(out_dir))
        canonical_adapter_files(out_dir, machine_path, meta["base_model"]["base"])
    shutil.copytree(tokenizer_dir, out_dir / TOKENIZER_DIR)
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def canonical_adapter_files(out_dir: Path, machine_path: str | None, configured_base: str) -> None:
    """The same training gives the same bytes (and the same DVC hash, which is the registry fingerprint) in every
    process and on every machine: PEFT keeps target_modules / modules_to_save as sets, so their order in
    adapter_config.json follows the process's string-hash seed (sorted here), and it writes the base's folder
    on this machine into adapter_config.json and its README.md (the base as configured instead; finsent_model.json
    pins the base's weights by sha256)."""
    path = out_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    if config.get("base_model_name_or_path") == machine_path:
        config["base_model_name_or_path"] = configured_base
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = out_dir / "README.md"
    if machine_path and card.is_file():
        card.write_text(card.read_text(encoding="utf-8").replace(machine_path, configured_base), encoding="utf-8")


def read_meta(bundle_dir: Path) -> dict:
    return json.loads((Path(bundle_dir) / META_FILE).read_text())


def load_bundle(bundle_dir: Path, merged: bool = False):
    """-> (model in eval mode, tokenizer, meta); raises FinsentError if the base weights differ. ``merged``:
    a LoRA / AdaLoRA / IA3 adapter folded into the base weights, the form every scorer serves: as fast as the
    base (the adapter's own products cost a third more on CPU), the same logits to float rounding (~1e-6)."""
    from finsent.features import load_tokenizer

    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    model = load_base_classifier(verified_base_path(meta["base_model"]), meta["labels"], meta.get("pooling", "cls"))
    if meta["method"] in WEIGHT_FILES:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(bundle_dir / WEIGHT_FILES[meta["method"]])),
                              strict=meta["method"] == "full")
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(bundle_dir))
        if merged and meta["method"] in MERGEABLE:
            model = model.merge_and_unload()
    model.eval()
    return model, load_tokenizer(bundle_dir / TOKENIZER_DIR), meta


def load_merged(bundle_dir: Path):
    """-> (a plain transformers model with the adapter folded into the base weights, tokenizer, meta): what a
    merged export saves and the ONNX export traces; FinsentError for a method whose adapter is not weights."""
    from finsent.errors import FinsentError

    method = read_meta(bundle_dir)["method"]
    if method not in (*MERGEABLE, *WEIGHT_FILES):
        raise FinsentError(f"a {method} bundle cannot be merged (its virtual tokens are not weights of "
                           f"the base); serve the bundle itself, or train with one of {', '.join(MERGEABLE)}")
    return load_bundle(bundle_dir, merged=True)


def export_merged(bundle_dir: Path, out_dir: Path) -> dict:
    """A plain transformers model with the adapter folded into the base weights: served without PEFT,
    as fast as the base. Loads with ``load_exported(out_dir)`` (``AutoModelForSequenceClassification.from_pretrained``
    plus the model's pooling; for ``cls`` pooling ``from_pretrained`` alone is the same model)."""
    from finsent.errors import FinsentError

    if not (Path(bundle_dir) / META_FILE).is_file():
        raise FinsentError(f"{bundle_dir}: not an adapter bundle (no {META_FILE}); give the folder a run wrote, "
                           f"e.g. models/adapter (`finsent fetch` downloads a registered one)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / "finsent_export.json").is_file() and (
            not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FinsentError(f"--out {out_dir}: exists and is not an earlier export; give a new folder "
                           f"(only a folder holding finsent_export.json is replaced)")
    model, tokenizer, meta = load_merged(bundle_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    exported = {**meta, "merged_from": str(bundle_dir)}
    (out_dir / "finsent_export.json").write_text(json.dumps(exported, indent=2, sort_keys=True))
    return exported


def load_exported(folder: Path):
    """-> (model in eval mode, tokenizer) of a merged export, pooling as it was trained."""
    from transformers import AutoModelForSequenceClassification

    from finsent.features import load_tokenizer
    from finsent.pooling import apply_pooling, pooling_of

    model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True,
                                                               trust_remote_code=False)
    return apply_pooling(model, pooling_of(model.config)).eval(), load_tokenizer(Path(folder))


def predict_proba(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64,
                  progress: bool = False, device: str = "cpu", batch_seconds: list | None = None) -> np.ndarray:
    """Class probabilities, shape (len(texts), n_labels). Batches are sorted by length to pad less;
    ``batch_seconds``, when given, receives the wall time of each batch (tokenizing included)."""
    import time

    import torch
    from tqdm.auto import tqdm

    order = np.argsort([len(t) for t in texts], kind="stable")
    probabilities = np.zeros((len(texts), model.config.num_labels), dtype=np.float64)
    batches = [order[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    with torch.inference_mode():
        for batch in tqdm(batches, desc="predict", unit="batch", disable=not progress, leave=False):
            started = time.perf_counter()
            encoded = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length,
                                padding=True, return_tensors="pt").to(device)
            logits = model(**encoded).logits.float()
            probabilities[batch] = torch.softmax(logits, dim=-1).cpu().numpy()
            if batch_seconds is not None:
                batch_seconds.append(time.perf_counter() - started)
    return probabilities
