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


@pytest.mark.parametrize("text, message", [
    ('train:\n  epochs: "eight"\n', "params: train.epochs must be int, got 'eight' (str)"),
    ("train:\n  batch_size: 16.5\n", "params: train.batch_size must be int, got 16.5 (float)"),
    ("train:\n  group_by_length: 1\n", "params: train.group_by_length must be bool, got 1 (int)"),
    ("model:\n  max_length: [64]\n", "params: model.max_length must be int, got [64] (list)"),
    ("labels: negative\n", "params: labels must be list[str], got 'negative' (str)"),
    ("train:\n  learning_rate: 1e-4\n", "params: train.learning_rate must be float, got '1e-4' (str)"),
])
def test_a_wrongly_typed_value_is_one_line_naming_key_value_and_type(tmp_path, text, message):
    file = tmp_path / "params.yaml"
    file.write_text(text)
    with pytest.raises(FinsentError) as raised:
        load_params(file)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)


def test_missing_params_file_says_where(tmp_path):
    with pytest.raises(FinsentError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text, message", [
    ("peft:\n  method: prefix_tuning\n", "prefix_tuning is not available: PEFT passes the prefix as past_key_values"),
    ("peft:\n  method: lorra\n", "unknown peft.method 'lorra'; available: lora, adalora, ia3, prompt_tuning"),
    ("peft:\n  lora:\n    rank: 4\n", r"unknown key\(s\) peft.lora.rank"),
    ("train:\n  lr_schedule: step\n", "train.lr_schedule must be linear, cosine or constant"),
    ("model:\n  pooling: max\n", "model.pooling must be one of cls, mean, got 'max'"),
    ("train:\n  label_smoothing: 1.5\n", r"train.label_smoothing must be in \[0, 1\), got 1.5"),
    ("peft:\n  lora:\n    dropout: 1.0\n", r"peft.lora.dropout must be in \[0, 1\) \(the share of adapter inputs"),
    ("peft:\n  adalora:\n    dropout: -0.1\n", r"peft.adalora.dropout must be in \[0, 1\) .*got -0.1"),
])
def test_peft_and_train_mistakes_are_named(tmp_path, text, message):
    file = tmp_path / "params.yaml"
    file.write_text(text)
    with pytest.raises(FinsentError, match=message):
        load_params(file)


def test_each_method_reads_its_own_section(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  learning_rate: 0.002\npeft:\n  method: full\n  lora:\n    r: 4\n")
    params = load_params(file)
    assert params.peft.lora.r == 4 and params.peft.settings.learning_rate == 5e-5
    assert params.peft.prompt_tuning.learning_rate == 0.03


def test_integer_label_map_keys_load(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("data:\n  label_map: {0: negative, 1: positive, 2: neutral}\n")
    assert load_params(file).data.label_map == {0: "negative", 1: "positive", 2: "neutral"}
