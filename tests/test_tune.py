"""`finsent tune`: real Optuna studies (SQLite) and real MLflow runs (SQLite) on a tiny BERT built in the test."""

import dataclasses
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from finsent.cli import main
from finsent.config import LoraParams, ModelParams, Params, PeftParams, SplitParams, TrainParams, TuneParams, \
    ValidationParams, load_params
from finsent.data.split import split
from finsent.data.validate import validate
from finsent.errors import FinsentError
from finsent.features import tokenize
from finsent.tune import tune, write_overrides

from conftest import LABELS, REPO, ingest_frame, sentences

SPACE = {"train.learning_rate": {"low": 0.001, "high": 0.02, "log": True},
         "peft.lora.r": {"choices": [2, 4]},
         "train.label_smoothing": {"low": 0.0, "high": 0.2}}
GARBAGE = b"not a parquet file: tuning must never open the test split\n"


def _params(base: Path, space: dict | None = None, **tune) -> Params:
    return Params(model=ModelParams(base=str(base), max_length=32),
                  peft=PeftParams(lora=LoraParams(r=4, alpha=8)),
                  train=TrainParams(epochs=2, batch_size=8, learning_rate=5e-3, num_threads=1),
                  split=SplitParams(seed=1), validation=ValidationParams(min_rows=10),
                  tune=TuneParams(**{"space": space or SPACE, "n_trials": 3, **tune}))


class PruneOddTrials(optuna.pruners.BasePruner):
    """Deterministic pruning for the test: every odd-numbered trial is pruned at its first report."""

    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1


@pytest.fixture(scope="module", autouse=True)
def tracking(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, tiny_base):
    """Tokenized splits whose test.parquet is garbage: any tuning that read it would fail."""
    folder = tmp_path_factory.mktemp("data")
    ingest_frame(sentences(15), folder)
    validate(folder / "ingested.parquet", LABELS, ValidationParams(min_rows=10), folder / "accepted.parquet",
             folder / "q.parquet", folder / "r.json")
    split(folder / "accepted.parquet", SplitParams(seed=1), folder / "split")
    tokenize(folder / "split", LABELS, ModelParams(base=str(tiny_base), max_length=32), folder / "tokenized")
    (folder / "tokenized" / "test.parquet").write_bytes(GARBAGE)
    return folder / "tokenized"


@pytest.fixture(scope="module")
def three_trials(tmp_path_factory, tiny_base, tokenized):
    folder = tmp_path_factory.mktemp("study")
    result = tune(tokenized, _params(tiny_base), folder / "tune.db", progress=False, project=folder)
    return result, folder / "tune.db"


def _study(db: Path, name: str = "finsent-tune"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def test_a_study_finds_a_best_trial_inside_the_space_and_persists(three_trials):
    result, db = three_trials
    assert (result.n_complete, result.n_pruned, result.n_failed) == (3, 0, 0)
    assert set(result.best_overrides) == set(SPACE)
    assert 0.001 <= result.best_overrides["train.learning_rate"] <= 0.02
    assert result.best_overrides["peft.lora.r"] in (2, 4)
    assert 0.0 <= result.best_overrides["train.label_smoothing"] <= 0.2
    study = _study(db)  # read back from SQLite by a new Study object
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.best_trial.number == result.best_trial and study.best_value == result.best_value
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.trials)  # one report per epoch
    assert len({t.params["train.learning_rate"] for t in study.trials}) == 3


def test_the_study_is_one_parent_mlflow_run_with_a_child_run_per_trial(three_trials):
    result, _ = three_trials
    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.run_name == "tune · finsent-tune" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_macro_f1"] == pytest.approx(result.best_value)
    assert parent.data.tags["best_trial"] == str(result.best_trial)
    assert parent.data.tags["finsent.tune.pruner"] == "MedianPruner"  # the default, from tune.pruner_*
    assert parent.data.tags["best.peft.lora.r"] == str(result.best_overrides["peft.lora.r"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == 3
    assert {c.data.tags["state"] for c in children} == {"complete"}
    assert sorted(c.data.params["trial"] for c in children) == ["0", "1", "2"]
    child = children[0]
    assert set(SPACE) <= set(child.data.params)
    history = client.get_metric_history(child.info.run_id, "val_macro_f1")
    assert [m.step for m in history] == [1, 2]
    assert {"train_loss", "val_loss", "best_val_macro_f1"} <= set(child.data.metrics)


def test_a_pruned_trial_stops_training_early_and_is_recorded_as_pruned(tmp_path, tiny_base, tokenized):
    result = tune(tokenized, _params(tiny_base), tmp_path / "tune.db", progress=False, project=tmp_path,
                  pruner=PruneOddTrials())
    assert (result.n_complete, result.n_pruned) == (2, 1)
    pruned = _study(tmp_path / "tune.db").trials[1]
    assert pruned.state.name == "PRUNED" and list(pruned.intermediate_values) == [1]  # epoch 2 never ran
    client = MlflowClient()
    run = client.get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.data.tags["state"] == "pruned" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1]


def test_an_interrupted_study_resumes_and_a_killed_trial_does_not_block_it(tmp_path, tiny_base, tokenized):
    db, params = tmp_path / "tune.db", _params(tiny_base)
    first = tune(tokenized, params, db, n_trials=2, progress=False, project=tmp_path)
    assert first.n_complete == 2
    _study(db).ask()  # what a SIGKILLed process leaves behind: a trial RUNNING forever
    assert [t.state.name for t in _study(db).trials] == ["COMPLETE", "COMPLETE", "RUNNING"]

    second = tune(tokenized, params, db, n_trials=3, progress=False, project=tmp_path)
    trials = _study(db).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]  # one more trial ran
    assert "killed" in trials[2].user_attrs["finsent.failed_reason"]
    assert trials[3].params != trials[0].params  # the resumed sampler does not replay its first draws
    assert (second.n_complete, second.n_failed) == (3, 1)
    assert second.parent_run_id == first.parent_run_id  # the study's one MLflow run, resumed
    children = MlflowClient().search_runs([MlflowClient().get_run(first.parent_run_id).info.experiment_id],
                                          filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'")
    assert len(children) == 3

    again = tune(tokenized, params, db, n_trials=3, progress=False, project=tmp_path)  # nothing left to run
    assert len(_study(db).trials) == 4 and again.best_trial == second.best_trial

    changed = dataclasses.replace(params, train=dataclasses.replace(params.train, weight_decay=0.1))
    with pytest.raises(FinsentError, match="compared its trials on other data, params or tune.space"):
        tune(tokenized, changed, db, n_trials=4, progress=False, project=tmp_path)


class CtrlCAtFirstEpoch(optuna.pruners.BasePruner):
    """What Ctrl-C during training does, at a deterministic moment: KeyboardInterrupt inside the trial."""

    def prune(self, study, trial) -> bool:
        raise KeyboardInterrupt


def test_ctrl_c_ends_the_runs_as_killed_quietly_and_the_study_resumes(tmp_path, tiny_base, tokenized, caplog):
    db, params = tmp_path / "tune.db", _params(tiny_base)
    optuna.logging.enable_propagation()  # so that caplog would see Optuna's "Trial 0 failed" traceback record
    try:
        with pytest.raises(KeyboardInterrupt):
            tune(tokenized, params, db, n_trials=1, progress=False, project=tmp_path, pruner=CtrlCAtFirstEpoch())
    finally:
        optuna.logging.disable_propagation()
    trial = _study(db).trials[0]
    assert trial.state.name == "FAIL"
    assert not [r for r in caplog.records if r.name.startswith("optuna")]  # no traceback logged for it
    client = MlflowClient()
    child = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert child.info.status == "KILLED" and child.data.tags["state"] == "interrupted"
    parent_id = _study(db).user_attrs["finsent.mlflow_parent_run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"

    resumed = tune(tokenized, params, db, n_trials=1, progress=False, project=tmp_path)
    assert (resumed.n_complete, resumed.n_failed) == (1, 1) and resumed.parent_run_id == parent_id
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_tuning_never_reads_the_test_split(tmp_path, tiny_base, tokenized):
    with pytest.raises(Exception):
        pd.read_parquet(tokenized / "test.parquet")  # the fixture made it unreadable
    result = tune(tokenized, _params(tiny_base), tmp_path / "tune.db", n_trials=1, progress=False,
                  project=tmp_path)
    assert result.n_complete == 1
    assert (tokenized / "test.parquet").read_bytes() == GARBAGE


def test_write_overrides_keeps_comments_and_records_the_trial(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text((REPO / "params.yaml").read_text())
    before = file.read_text().splitlines()
    overrides = {"train.learning_rate": 5e-05, "peft.lora.r": 16, "train.label_smoothing": 0.1}
    write_overrides(file, overrides, "finsent-tune", 7, 0.91234567)
    text = file.read_text()
    assert "# Every knob of a finsent run." in text and "# stop after N epochs without a better" in text
    assert "  learning_rate: 5.0e-05  # default" in text  # 5e-05 would read back as a string
    assert "  applied: {study: finsent-tune, trial: 7, value: 0.912346}" in text
    params = load_params(file)
    assert (params.train.learning_rate, params.peft.lora.r, params.train.label_smoothing) == (5e-05, 16, 0.1)
    assert params.tune.applied == {"study": "finsent-tune", "trial": 7, "value": 0.912346}
    changed = set(text.splitlines()) ^ set(before)
    assert len(changed) <= 2 * 4, changed  # the three values and tune.applied: nothing else is rewritten


def test_write_overrides_restores_the_file_when_a_value_is_refused(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text((REPO / "params.yaml").read_text())
    before = file.read_text()
    with pytest.raises(FinsentError, match="train.lr_schedule must be"):
        write_overrides(file, {"train.lr_schedule": "step"}, "s", 1)
    assert file.read_text() == before


@pytest.mark.parametrize("entry, message", [
    ("train.learnig_rate: {low: 0.1, high: 0.2}", "tune.space train.learnig_rate: no such params key"),
    ("train: {choices: [1, 2]}", "tune.space train: is a section"),
    ("split.seed: {choices: [1, 2]}", "tune.space split.seed: not tunable"),
    ("train.learning_rate: {low: 0.1}", "tune.space train.learning_rate: low and high must be numbers"),
    ("train.learning_rate: {low: 0.2, high: 0.1}", "tune.space train.learning_rate: needs low < high"),
    ("train.learning_rate: {low: 0, high: 0.1, log: true}", "train.learning_rate: log: true needs low > 0"),
    ("train.epochs: {low: 2.5, high: 4}", "tune.space train.epochs: is an integer setting"),
    ("train.lr_schedule: {low: 1, high: 2}", "tune.space train.lr_schedule: is a str setting, not a number"),
    ("peft.lora.r: {choices: []}", "tune.space peft.lora.r: choices must be a non-empty list"),
    ("peft.lora.r: [4, 8]", r"tune.space peft.lora.r: got \[4, 8\]; expected \{low: L, high: H\}"),
    ("peft.lora.r: {choices: [4], low: 1}", "tune.space peft.lora.r: got"),
])
def test_a_bad_space_fails_at_load_naming_the_key(tmp_path, entry, message):
    file = tmp_path / "params.yaml"
    file.write_text(f"tune:\n  space:\n    {entry}\n")
    with pytest.raises(FinsentError, match=message):
        load_params(file)


def test_a_space_these_params_cannot_use_fails_before_any_trial(tmp_path, tiny_base, tokenized):
    bad_value = _params(tiny_base, {"train.lr_schedule": {"choices": ["linear", "step"]}})
    with pytest.raises(FinsentError, match="train.lr_schedule: 'step' is not a usable value: train.lr_schedule must"):
        tune(tokenized, bad_value, tmp_path / "tune.db", progress=False, project=tmp_path)
    other_method = dataclasses.replace(_params(tiny_base), peft=PeftParams(method="ia3"))
    with pytest.raises(FinsentError, match="peft.lora.r: has no effect with peft.method ia3"):
        tune(tokenized, other_method, tmp_path / "tune.db", progress=False, project=tmp_path)
    assert not (tmp_path / "tune.db").exists()


def test_cli_tune_needs_tokenized_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("labels: [negative, neutral, positive]\n")
    assert main(["tune"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run `finsent run` (or `dvc repro tokenize`) first" in err


def test_cli_tune_prints_the_best_trial_and_applies_it(tmp_path, monkeypatch, capsys, tiny_base, tokenized):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tokenized, tmp_path / "data" / "tokenized")
    (tmp_path / "mine.yaml").write_text(
        f"model: {{base: {tiny_base}, max_length: 32}}  # the tiny test base\n"
        "peft: {lora: {r: 4, alpha: 8}}\n"
        "train: {epochs: 2, batch_size: 8, learning_rate: 0.005, num_threads: 1}\n"
        "tune:\n  n_trials: 5\n  space:\n    train.learning_rate: {low: 0.001, high: 0.01, log: true}\n")
    assert main(["tune", "--trials", "1", "--apply", "--params", "mine.yaml"]) == 0
    out = capsys.readouterr().out
    assert "best trial 0: validation macro-F1 " in out and "  -S train.learning_rate=" in out
    assert "applied to mine.yaml (tune.applied names study and trial)" in out
    params = load_params(tmp_path / "mine.yaml")
    assert params.tune.applied["study"] == "finsent-tune" and params.tune.applied["trial"] == 0
    assert params.train.learning_rate != 0.005
    assert "# the tiny test base" in (tmp_path / "mine.yaml").read_text()
    assert (tmp_path / ".finsent" / "tune.db").is_file()
