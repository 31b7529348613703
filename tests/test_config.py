from pathlib import Path

import pytest

from finsent.config import load_params
from finsent.errors import FinsentError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_load_with_every_section():
    params = load_params(REPO / "params.yaml")
    assert params.labels == ["negative", "neutral", "positive"]
    assert params.peft.method == "lora"
    assert params.registry.champion_alias == "champion"


def test_unknown_key_is_an_error_not_a_silent_default(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  epochz: 3\n")
    with pytest.raises(FinsentError, match=r"unknown key\(s\) train.epochz"):
        load_params(file)


def test_missing_params_file_says_where(tmp_path):
    with pytest.raises(FinsentError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
