"""Shared fixtures: a tiny BERT base built in the test, and small labelled frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "neutral", "positive"]
WORDS = ("profit rose fell loss sales revenue shares company quarter guidance cut raised dividend "
         "record weak strong orders contract expects lower higher eur mn percent the a of to in and").split()


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with its own word-level vocabulary, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_base")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


def sentences(n_per_label: int = 12) -> pd.DataFrame:
    """Small, clearly separable finance-like sentences written for the tests."""
    templates = {"positive": "profit rose to a record {} eur mn", "negative": "shares fell after a loss of {} eur mn",
                 "neutral": "the company will report in quarter {}"}
    rows = [{"text": template.format(i), "label": label} for label, template in templates.items()
            for i in range(n_per_label)]
    return pd.DataFrame(rows)


def ingest_frame(frame: pd.DataFrame, folder: Path) -> Path:
    """Write ``frame`` as a CSV source and run the real sources + ingest functions on it."""
    from finsent.config import DataParams
    from finsent.data.ingest import ingest
    from finsent.data.sources import manifest

    frame.to_csv(folder / "raw.csv", index=False)
    data = DataParams(sources=[str(folder / "raw.csv")])
    ingest(manifest(data)["files"], LABELS, data, folder / "ingested.parquet")
    return folder / "ingested.parquet"
