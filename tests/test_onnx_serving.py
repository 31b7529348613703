"""The onnx stage and the ONNX Runtime backends, on a tiny BERT trained in the test."""

import dataclasses
import json
import shutil
import types

import numpy as np
import pandas as pd
import pytest

from finsent.config import ModelParams, ServingParams
from finsent.onnx_model import (BUNDLE_SUBDIR, CHOICE_FILE, FP32_FILE, INT8_FILE, ONNX_TOLERANCE, TokenizerFile, build,
                                export_fp32, int8_cpu_note, load_scorer, quantize_int8, read_choice,
                                sensitive_projections, this_cpu)
from finsent.serving import SentimentModel
from finsent.train.fit import fit

from test_train_bundle import _params, tokenized  # noqa: F401  (module fixture: the tiny tokenized data)

TEXTS = ["profit rose to a record 12 eur mn", "shares fell after a loss of 3 eur mn",
         "the company will report in quarter 2", "profit rose", "a loss"]


def _build(bundle, test_split, settings, folder):
    """The onnx stage, its test predictions beside the folder."""
    return build(bundle, test_split, settings, folder, folder.with_name(folder.name + "-predictions.parquet"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_base, tokenized):  # noqa: F811
    folder = tmp_path_factory.mktemp("onnx")
    fit(tokenized, _params(tiny_base, "lora", epochs=2), folder / "adapter", folder / "train.json")
    return folder / "adapter"


@pytest.fixture(scope="module")
def test_split(tokenized):  # noqa: F811
    return tokenized.parent / "split" / "test.parquet"


def test_onnx_fp32_gives_the_torch_models_probabilities(bundle, test_split, tmp_path):
    choice = _build(bundle, test_split, ServingParams(backend="onnx"), tmp_path / "onnx")
    assert choice.backend == "onnx", choice.reason
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [CHOICE_FILE, FP32_FILE]
    assert choice.onnx_max_probability_diff <= ONNX_TOLERANCE
    assert choice.macro_f1["onnx"] == choice.macro_f1["torch"] and choice.rows == len(pd.read_parquet(test_split))
    torch_scores = load_scorer(bundle, tmp_path / "nothing-here").predict_proba(TEXTS)
    onnx_scorer = load_scorer(bundle, tmp_path / "onnx")
    assert onnx_scorer.backend == "onnx"
    onnx_scores = onnx_scorer.predict_proba(TEXTS)
    assert np.abs(onnx_scores - torch_scores).max() <= ONNX_TOLERANCE
    assert (onnx_scores.argmax(axis=1) == torch_scores.argmax(axis=1)).all()


def test_int8_is_chosen_only_within_its_limits_and_keeps_the_labels(bundle, test_split, tmp_path):
    choice = _build(bundle, test_split, ServingParams(), tmp_path / "onnx")
    agreement = choice.int8_label_agreement
    assert 0 <= agreement <= 1 and set(choice.macro_f1) == {"torch", "onnx", "onnx-int8"}
    drop = choice.macro_f1["torch"] - choice.macro_f1["onnx-int8"]
    within = agreement >= 0.99 and drop <= 0.005
    assert choice.backend == ("onnx-int8" if within else "onnx"), choice
    kept = {"onnx-int8": INT8_FILE, "onnx": FP32_FILE}[choice.backend]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted([CHOICE_FILE, kept])

    lenient = _build(bundle, test_split, ServingParams(int8_min_label_agreement=0.0, int8_max_macro_f1_drop=1.0),
                    tmp_path / "lenient")
    assert lenient.backend == "onnx-int8" and (tmp_path / "lenient" / INT8_FILE).is_file()
    assert (tmp_path / "lenient" / INT8_FILE).stat().st_size < 0.5 * (tmp_path / "onnx" / kept).stat().st_size \
        or kept == INT8_FILE
    int8 = load_scorer(bundle, tmp_path / "lenient").predict_proba(TEXTS)
    reference = load_scorer(bundle, tmp_path / "nothing-here").predict_proba(TEXTS)
    assert np.abs(int8 - reference).max() < 0.1  # INT8 weights: close, not equal
    strict = _build(bundle, test_split, ServingParams(int8_min_label_agreement=1.0, int8_max_macro_f1_drop=0.0),
                   tmp_path / "strict")
    assert strict.backend == ("onnx-int8" if strict.int8_label_agreement == 1.0
                              and strict.macro_f1["onnx-int8"] >= strict.macro_f1["torch"] else "onnx")


def test_an_int8_texts_label_does_not_depend_on_the_texts_scored_with_it(bundle, test_split, tmp_path):
    """Dynamic INT8 scales each matrix product's input by the whole input's range, so the served INT8 model
    scores row by row: a text gets the same probabilities alone, in a batch, and beside other texts."""
    lenient = ServingParams(int8_min_label_agreement=0.0, int8_max_macro_f1_drop=1.0)
    assert _build(bundle, test_split, lenient, tmp_path / "onnx").backend == "onnx-int8"
    scorer = load_scorer(bundle, tmp_path / "onnx")
    others = pd.read_parquet(test_split)["text"].astype(str).tolist()
    together = scorer.predict_proba(TEXTS)
    alone = np.vstack([scorer.predict_proba([text]) for text in TEXTS])
    beside_others = scorer.predict_proba(others + TEXTS)[len(others):]
    assert np.abs(together - alone).max() <= 1e-6 and np.abs(beside_others - alone).max() <= 1e-6
    assert scorer.predict_proba([]).shape[0] == 0


def test_int8_keeps_the_sensitive_projections_fp32_when_the_full_recipe_is_refused(bundle, test_split, tmp_path):
    """The second INT8 recipe leaves every layer's feed-forward output and layer 0's feed-forward input as fp32
    MatMul nodes, quantizes the other projections, and is what a refused first recipe falls back to."""
    import onnx

    export_fp32(bundle, tmp_path / FP32_FILE)
    sensitive = sensitive_projections(tmp_path / FP32_FILE)
    assert sorted(name.split("/encoder/")[1] for name in sensitive) == [
        "layer.0/intermediate/dense/MatMul", "layer.0/output/dense/MatMul", "layer.1/output/dense/MatMul"]
    quantize_int8(tmp_path / FP32_FILE, tmp_path / INT8_FILE, sensitive)
    nodes = onnx.load(str(tmp_path / INT8_FILE)).graph.node
    assert {n.name for n in nodes if n.op_type == "MatMul"} >= set(sensitive)
    quantized = [n.name for n in nodes if n.op_type == "MatMulInteger"]
    assert quantized and not any(name.startswith(tuple(sensitive)) for name in quantized)

    unreachable = types.SimpleNamespace(backend="onnx-int8", int8_min_label_agreement=1.01,  # no recipe can pass
                                        int8_max_macro_f1_drop=0.0)
    refused = _build(bundle, test_split, unreachable, tmp_path / "refused")
    assert refused.backend == "onnx" and refused.int8_recipe == "3 sensitive projections fp32", refused
    assert refused.reason.startswith("INT8 (3 sensitive projections fp32) gives torch's label on"), refused.reason


def test_backend_torch_and_unexportable_methods_are_served_on_torch(bundle, test_split, tmp_path, tiny_base,
                                                                    tokenized):  # noqa: F811
    choice = _build(bundle, test_split, ServingParams(backend="torch"), tmp_path / "torch")
    assert choice.backend == "torch" and sorted(p.name for p in (tmp_path / "torch").iterdir()) == [CHOICE_FILE]
    prompt = tmp_path / "prompt"
    params = _params(tiny_base, "prompt_tuning", epochs=1)
    fit(tokenized, dataclasses.replace(params, model=ModelParams(base=str(tiny_base), max_length=32)),
        prompt, tmp_path / "p.json")
    choice = _build(prompt, test_split, ServingParams(), tmp_path / "prompt-onnx")
    assert choice.backend == "torch" and "cannot be merged" in choice.reason
    assert json.loads((tmp_path / "prompt-onnx" / CHOICE_FILE).read_text())["backend"] == "torch"

    no_file = tmp_path / "no-tokenizer-file"  # ONNX scoring runs the fast tokenizer's file, nothing else
    shutil.copytree(bundle, no_file)
    (no_file / "tokenizer" / "tokenizer.json").unlink()
    choice = _build(no_file, test_split, ServingParams(), tmp_path / "no-file-onnx")
    assert choice.backend == "torch" and "has no tokenizer.json" in choice.reason


def test_a_stored_model_serves_on_its_onnx_folder_and_without_one_on_torch(bundle, test_split, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(bundle, plain)
    served = SentimentModel(plain)
    assert served.backend == "torch"
    with_onnx = tmp_path / "with-onnx"
    shutil.copytree(bundle, with_onnx)
    _build(bundle, test_split, ServingParams(backend="onnx"), with_onnx / BUNDLE_SUBDIR)
    assert read_choice(with_onnx / BUNDLE_SUBDIR).backend == "onnx"
    onnx_served = SentimentModel(with_onnx)
    assert onnx_served.backend == "onnx"
    frame = pd.DataFrame({"text": TEXTS})
    torch_out, onnx_out = served.predict(frame), onnx_served.predict(frame)
    assert list(onnx_out.columns) == list(torch_out.columns)
    assert onnx_out["label"].tolist() == torch_out["label"].tolist()
    probabilities = [c for c in torch_out.columns if c.startswith("prob_")]
    assert np.abs(onnx_out[probabilities].to_numpy() - torch_out[probabilities].to_numpy()).max() <= ONNX_TOLERANCE


def test_the_stage_writes_the_test_predictions_its_backend_reproduces(bundle, test_split, tmp_path):
    """What the servability check compares a registered version with: the chosen backend's own predictions."""
    choice = _build(bundle, test_split, ServingParams(int8_min_label_agreement=0.0, int8_max_macro_f1_drop=1.0),
                    tmp_path / "onnx")
    predictions = pd.read_parquet(tmp_path / "onnx-predictions.parquet")
    test = pd.read_parquet(test_split)
    assert predictions["id"].tolist() == test["id"].tolist() and choice.backend == "onnx-int8"
    scorer = load_scorer(bundle, tmp_path / "onnx")
    again = scorer.predict_proba(test["text"].tolist())
    columns = [f"prob_{name}" for name in scorer.labels]
    assert np.abs(predictions[columns].to_numpy() - again).max() <= 1e-6
    assert predictions["predicted"].tolist() == [scorer.labels[i] for i in again.argmax(axis=1)]


@pytest.mark.parametrize("base", ["tiny", "bundled"])
@pytest.mark.parametrize("max_length", [128, 8])
def test_the_tokenizer_file_gives_transformers_ids_and_padding(base, max_length, tiny_base, tmp_path):
    """ONNX scoring tokenizes without transformers: the same ids, truncation and padding as the tokenizer the
    model was trained and evaluated with (saved as the tokenize stage saves it)."""
    from finsent.base_model import resolve_base
    from finsent.features import load_tokenizer

    load_tokenizer(tiny_base if base == "tiny" else resolve_base("bundled")).save_pretrained(str(tmp_path))
    texts = [*TEXTS, "", "  ", "Société Générale's net profit\trose 12 %\nto EUR3.1mn", "利润增长 😀 ümlaut",
             " ".join(["profit rose"] * 200), "PROFIT Rose"]
    ours, theirs = TokenizerFile(tmp_path, max_length), load_tokenizer(tmp_path)
    assert ours.ids(texts) == theirs(texts, truncation=True, max_length=max_length)["input_ids"]
    input_ids, attention_mask = ours.padded(texts)
    padded = theirs(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    assert (input_ids == padded["input_ids"]).all() and (attention_mask == padded["attention_mask"]).all()


def test_the_evaluations_torch_scores_stand_in_for_scoring_the_test_split_again(bundle, test_split, tmp_path):
    """The pipeline hands the evaluate stage's predictions to the onnx stage: the same check, the same choice."""
    from finsent.config import EvalParams
    from finsent.errors import FinsentError
    from finsent.evaluate.metrics import evaluate

    evaluate(bundle, test_split, EvalParams(latency_repeats=1), tmp_path / "eval")
    reference = tmp_path / "eval" / "test_predictions.parquet"
    scored = _build(bundle, test_split, ServingParams(backend="onnx"), tmp_path / "scored")
    given = build(bundle, test_split, ServingParams(backend="onnx"), tmp_path / "given", tmp_path / "given.parquet",
                  reference=reference)
    assert given.backend == scored.backend == "onnx" and given.macro_f1 == scored.macro_f1
    assert abs(given.onnx_max_probability_diff - scored.onnx_max_probability_diff) <= 1e-6

    shuffled = pd.read_parquet(reference).sample(frac=1.0, random_state=0)  # rows are matched by id
    shuffled.to_parquet(tmp_path / "shuffled.parquet", index=False)
    again = build(bundle, test_split, ServingParams(backend="onnx"), tmp_path / "again", tmp_path / "again.parquet",
                  reference=tmp_path / "shuffled.parquet")
    assert again.onnx_max_probability_diff == given.onnx_max_probability_diff

    shuffled.iloc[1:].to_parquet(tmp_path / "short.parquet", index=False)
    with pytest.raises(FinsentError, match="not the evaluation of this test split .its rows are not the test"):
        build(bundle, test_split, ServingParams(), tmp_path / "short", tmp_path / "short-predictions.parquet",
              reference=tmp_path / "short.parquet")


@pytest.mark.parametrize("settings, message", [
    ({"backend": "tensorrt"}, "serving.backend must be one of onnx-int8, onnx, torch"),
    ({"int8_min_label_agreement": 1.5}, "serving.int8_min_label_agreement")])
def test_a_bad_serving_setting_is_one_line_naming_the_key(settings, message):
    from finsent.errors import FinsentError

    with pytest.raises(FinsentError, match=message):
        ServingParams(**settings)


def test_an_int8_model_loaded_on_a_cpu_with_other_int8_instructions_says_so(bundle, test_split, tmp_path):
    """INT8 kernels differ by CPU instructions (no VNNI: 16-bit sums that can saturate), so the check's CPU is
    recorded and a load elsewhere carries a note; on the checking CPU, none."""
    folder = tmp_path / "onnx"
    choice = _build(bundle, test_split, ServingParams(int8_min_label_agreement=0.0, int8_max_macro_f1_drop=1.0),
                    folder)
    assert choice.backend == "onnx-int8" and choice.checked_on == this_cpu()
    assert load_scorer(bundle, folder).note is None
    elsewhere = {**choice.checked_on, "cpu": "an older CPU", "int8_instructions": ["avx2"]}
    (folder / CHOICE_FILE).write_text(json.dumps({**choice.to_dict(), "checked_on": elsewhere}))
    note = load_scorer(bundle, folder).note
    here = this_cpu()
    if here["int8_instructions"] is None or set(here["int8_instructions"]) == {"avx2"}:
        assert note is None  # this CPU does not say, or it is such a CPU
    else:
        assert note.startswith("INT8 was checked on an older CPU (avx2); this CPU") and "serving.backend: onnx" in note
    assert int8_cpu_note(None, here) is None  # a choice made before the CPU was recorded
    assert int8_cpu_note({**elsewhere, "int8_instructions": None}, here) is None  # unknown: nothing to compare
