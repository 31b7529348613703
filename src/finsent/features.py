"""Tokenize stage: split text -> token ids with the base model's tokenizer.

No padding here (batches are padded dynamically at training time). DVC keys the cached output by
the split files' hashes plus ``model.base`` and ``model.max_length``; ``tokenizer.json`` in the
output records the tokenizer identity, and the tokenizer files travel on into the adapter bundle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from finsent.base_model import resolve_base
from finsent.config import SPLITS, ModelParams

TOKENIZER_DIR = "tokenizer"


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def _files_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def tokenize(split_dir: Path, labels: list[str], params: ModelParams, out_dir: Path) -> dict:
    tokenizer = load_tokenizer(resolve_base(params.base))
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir / TOKENIZER_DIR))
    label_ids = {name: i for i, name in enumerate(labels)}
    counts = {}
    for name in SPLITS:
        frame = pd.read_parquet(split_dir / f"{name}.parquet")
        encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=params.max_length)
        pd.DataFrame({"id": frame["id"], "input_ids": encoded["input_ids"],
                      "label_id": frame["label"].map(label_ids).astype("int64")}).to_parquet(
            out_dir / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    identity = {"tokenizer_class": type(tokenizer).__name__, "base": params.base, "max_length": params.max_length,
                "files_sha256": _files_sha256(out_dir / TOKENIZER_DIR), "rows": counts}
    (out_dir / "tokenizer.json").write_text(json.dumps(identity, indent=2))
    return identity
