"""`finsent tune`: Optuna hyper-parameter search over params.yaml's ``tune.space``.

Each trial trains on the tokenized train split with the sampled overrides and is scored by its best
epoch's validation macro-F1. The test split is never opened (train_model reads train.parquet and
val.parquet only), so the gate's test metrics stay an honest estimate for the model trained next.

TPE sampler (seeded), median pruning on the per-epoch validation macro-F1. The study lives in SQLite
(``.finsent/tune.db``): a re-run resumes it, and ``n_trials`` counts finished (complete + pruned) trials
in total. A trial left RUNNING by a killed process is marked FAIL when the next run starts (a lock file
guarantees that no other ``finsent tune`` owns it, so no heartbeat grace period has to pass) and is not
counted: the search samples a fresh configuration in its place. A study is tied to the data and params
it compares trials on (a fingerprint); resuming it on other data or settings is refused.

MLflow: one parent run per study (resumed with the study), each trial a nested child run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finsent.config import PEFT_METHODS, Params, _leaf_type
from finsent.errors import FinsentError

PARENT_RUN_ATTR = "finsent.mlflow_parent_run_id"
FINGERPRINT_ATTR = "finsent.fingerprint"
STALE_REASON = "left RUNNING by a finsent tune that was killed; marked FAIL by the next finsent tune"
SPEED_ONLY = ("checkpoint_every_steps", "num_threads", "processes")  # change how fast, not what is trained


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    best_trial: int  # Optuna trial number
    best_value: float  # its best epoch's validation macro-F1
    best_overrides: dict[str, Any]  # dotted params key -> value
    n_complete: int
    n_pruned: int
    n_failed: int  # crashed or killed trials (not counted in n_trials)
    storage: Path
    parent_run_id: str  # MLflow run of the study; the trials are its children


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """``params`` with each dotted key set. dataclasses.replace rebuilds each section on the way, so the
    section's own checks judge the value exactly as they would in params.yaml."""
    def replace(section, parts: list[str], value):
        inner = value if len(parts) == 1 else replace(getattr(section, parts[0]), parts[1:], value)
        return dataclasses.replace(section, **{parts[0]: inner})

    for key, value in overrides.items():
        params = replace(params, key.split("."), value)
    return params


def check_space(params: Params) -> None:
    """Fail before the first trial on a space that cannot work with these params: a value a section rejects,
    or a key with no effect under the chosen peft.method (it would waste every trial on noise)."""
    space = params.tune.space
    if not space:
        raise FinsentError("params: tune.space is empty; name at least one params key to search, e.g. "
                           "train.learning_rate: {low: 0.0002, high: 0.003, log: true}")
    for key, spec in space.items():
        for value in spec.get("choices", [spec.get("low"), spec.get("high")]):
            try:
                with_overrides(params, {key: value})
            except FinsentError as exc:
                raise FinsentError(f"params: tune.space {key}: {value!r} is not a usable value: "
                                   f"{str(exc).removeprefix('params: ')}") from None
    method = params.peft.method
    if "peft.method" in space:
        return  # the method varies: keys of several methods are each live in some trials
    for key in space:
        parts = key.split(".")
        if parts[0] == "peft" and parts[1] in PEFT_METHODS and parts[1] != method:
            raise FinsentError(f"params: tune.space {key}: has no effect with peft.method {method}; tune "
                               f"peft.{method}.* keys instead (or add peft.method to the space)")
    own_rate = params.peft.settings.learning_rate
    if "train.learning_rate" in space and own_rate is not None and f"peft.{method}.learning_rate" not in space:
        raise FinsentError(f"params: tune.space train.learning_rate: has no effect: peft.{method}.learning_rate "
                           f"({own_rate}) overrides it; tune peft.{method}.learning_rate instead")


def suggest(trial, key: str, spec: dict) -> Any:
    """One value for ``key``: categorical for choices, else int or float by the params field's type."""
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    log = bool(spec.get("log", False))
    if "float" not in _leaf_type(key):
        return trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=log)
    step = float(spec["step"]) if spec.get("step") is not None else None
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=step, log=log)


def fingerprint(tokenized_dir: Path, params: Params) -> str:
    """What trials of one study must share to be comparable: the train/val data and tokenizer bytes, the
    training params except the searched keys (and speed-only knobs), and the space itself."""
    from finsent.features import TOKENIZER_DIR

    sections = {k: params.as_dict()[k] for k in ("labels", "model", "peft", "train")}
    for key in params.tune.space:
        *path, leaf = key.split(".")
        node = sections
        for part in path:
            node = node[part]
        node.pop(leaf, None)
    for key in SPEED_ONLY:
        sections["train"].pop(key, None)
    digest = hashlib.sha256(json.dumps({"params": sections, "space": params.tune.space}, sort_keys=True,
                                       default=str).encode())
    tokenizer = sorted(p for p in (tokenized_dir / TOKENIZER_DIR).rglob("*") if p.is_file())
    for file in [tokenized_dir / "train.parquet", tokenized_dir / "val.parquet", *tokenizer]:  # never test
        digest.update(str(file.relative_to(tokenized_dir)).encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _exclusive(lock_file: Path):
    """One `finsent tune` per study database at a time: what makes failing RUNNING trials at start safe.
    flock is released by the OS when the holder dies, so a killed run never leaves a stale lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock (do not run two tunes on one project)
        yield
        return
    with lock_file.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FinsentError(f"another finsent tune is running on {lock_file.with_suffix('.db')}; wait for "
                               f"it to finish or stop it") from None
        yield


def _open_study(storage_path: Path, params: Params, expected_fingerprint: str, pruner):
    import optuna

    cfg = params.tune
    storage = optuna.storages.RDBStorage(f"sqlite:///{storage_path}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        earlier = storage.get_all_trials(storage.get_study_id_from_name(cfg.study_name), deepcopy=False)
    except KeyError:
        earlier = []
    # a resumed study must not replay the seeded sampler's first draws: continue with seed + trials so far
    sampler = optuna.samplers.TPESampler(seed=cfg.sampler_seed + len(earlier))
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials,
                                                   n_warmup_steps=cfg.pruner_warmup_epochs)
    study = optuna.create_study(storage=storage, study_name=cfg.study_name, direction="maximize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None:
        study.set_user_attr(FINGERPRINT_ATTR, expected_fingerprint)
    elif recorded != expected_fingerprint:
        raise FinsentError(f"study '{cfg.study_name}' in {storage_path} compared its trials on other data, "
                           f"params or tune.space; set a new tune.study_name to start a new search")
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # safe under the lock: its process is gone. _trial_id: Optuna has no public accessor for it
        storage.set_trial_user_attr(stale._trial_id, "finsent.failed_reason", STALE_REASON)
        storage.set_trial_state_values(stale._trial_id, optuna.trial.TrialState.FAIL)
    return study


def _parent_run(client, study, experiment_id: str):
    """The study's MLflow run: the one recorded in the study when it still exists here, else a new one."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id:
        try:
            run = client.get_run(run_id)
            if run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active":
                return mlflow.start_run(run_id=run_id)
        except MlflowException:
            pass  # another tracking server, or the run was purged
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"tune · {study.study_name}")
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run


class _ReportedFailures(logging.Filter):
    """Optuna logs every failed trial with its traceback. An interrupt or a FinsentError reaches the caller,
    which reports it (the CLI in one line): the log records of those trials are dropped."""

    def __init__(self):
        super().__init__()
        self.trials: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.getMessage().startswith(f"Trial {n} failed") for n in self.trials)


def _counts(study) -> dict[str, int]:
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return {name: states.count(name.upper()) for name in ("complete", "pruned", "fail")}


def _best(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def tune(tokenized_dir: Path, params: Params, storage_path: Path, n_trials: int | None = None,
         timeout_minutes: float | None = None, progress: bool = True, *, project: Path | None = None,
         pruner=None) -> TuneResult:
    """Run (or resume) the study until it has ``n_trials`` finished trials (default tune.n_trials) or the
    timeout passes -> the best trial. ``pruner`` replaces the median pruner (tests need a deterministic one).
    ``project`` holds the MLflow artifact root when the experiment has to be created (default: cwd's)."""
    import mlflow
    import optuna
    from mlflow import MlflowClient
    from tqdm.auto import tqdm

    from finsent.runtime import project_experiment_id, project_root
    from finsent.train.fit import train_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our bar instead of a log line per trial
    cfg = params.tune
    check_space(params)
    wanted = n_trials if n_trials is not None else cfg.n_trials
    timeout = timeout_minutes if timeout_minutes is not None else cfg.timeout_minutes
    if wanted < 1 or (timeout is not None and timeout <= 0):
        raise FinsentError(f"tune: trials must be >= 1 and the timeout > 0, got {wanted} and {timeout}")
    storage_path = Path(storage_path)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(storage_path.with_suffix(".lock")):
        study = _open_study(storage_path, params, fingerprint(tokenized_dir, params), pruner)
        finished = sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.get_trials(deepcopy=False))
        remaining = max(0, wanted - finished)

        client = MlflowClient()
        experiment_id = project_experiment_id(client, params.registry.experiment, project or project_root())
        parent = _parent_run(client, study, experiment_id)
        mlflow.set_tags({"finsent.tune.study": study.study_name, "finsent.tune.storage": str(storage_path),
                         "finsent.tune.space": json.dumps(cfg.space, sort_keys=True),
                         "finsent.tune.sampler": f"TPE seed {cfg.sampler_seed}",
                         "finsent.tune.pruner": type(study.pruner).__name__})

        def objective(trial) -> float:
            try:
                return run_trial(trial)
            except (KeyboardInterrupt, FinsentError):
                quiet.trials.add(trial.number)  # the CLI says it in one line
                raise

        def run_trial(trial) -> float:
            overrides = {key: suggest(trial, key, spec) for key, spec in cfg.space.items()}
            trial_params = with_overrides(params, overrides)
            trial_params = with_overrides(trial_params, {"train.checkpoint_every_steps": 0})  # a trial is cheap

            def on_epoch(entry: dict) -> None:
                mlflow.log_metrics({k: float(entry[k]) for k in ("train_loss", "val_loss", "val_macro_f1")},
                                   step=entry["epoch"])
                trial.report(entry["val_macro_f1"], entry["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {entry['epoch']}: validation macro-F1 "
                                             f"{entry['val_macro_f1']:.4f}")

            child = mlflow.start_run(experiment_id=experiment_id, run_name=f"trial {trial.number}", nested=True)
            try:
                trial.set_user_attr("mlflow_run_id", child.info.run_id)
                mlflow.log_params({**overrides, "trial": trial.number, "study": study.study_name})
                _, summary = train_model(tokenized_dir, trial_params, on_epoch=on_epoch, show_progress=False)
            except optuna.TrialPruned:
                mlflow.set_tag("state", "pruned")
                mlflow.end_run()  # pruning is a normal end
                raise
            except BaseException as exc:
                interrupted = isinstance(exc, KeyboardInterrupt)
                mlflow.set_tag("state", "interrupted" if interrupted else "failed")
                mlflow.end_run("KILLED" if interrupted else "FAILED")
                raise
            mlflow.log_metrics({"best_val_macro_f1": summary["best_val_macro_f1"],
                                "best_epoch": summary["best_epoch"]})
            mlflow.set_tag("state", "complete")
            mlflow.end_run()
            return summary["best_val_macro_f1"]

        bar = tqdm(total=remaining, desc=f"tune {study.study_name}", unit="trial", disable=not progress)

        def after_trial(study, trial) -> None:
            bar.update(1)
            best = _best(study)
            bar.set_postfix_str(f"best {best.value:.4f} (trial {best.number})" if best else "best -")

        status, quiet = "FINISHED", _ReportedFailures()
        optimize_logger = logging.getLogger("optuna.study._optimize")
        optimize_logger.addFilter(quiet)
        try:
            if remaining:
                study.optimize(objective, n_trials=remaining, timeout=timeout * 60 if timeout else None,
                               callbacks=[after_trial], gc_after_trial=True)
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            optimize_logger.removeFilter(quiet)
            bar.close()
            while mlflow.active_run() and mlflow.active_run().info.run_id != parent.info.run_id:
                mlflow.end_run("FAILED")  # a child the objective could not close: the tags below are the parent's
            counts, best = _counts(study), _best(study)
            mlflow.set_tags({"n_complete": counts["complete"], "n_pruned": counts["pruned"],
                             "n_failed": counts["fail"]})
            if best is not None:
                mlflow.log_metric("best_val_macro_f1", best.value, step=counts["complete"] + counts["pruned"])
                mlflow.set_tags({"best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
            mlflow.end_run(status)
    if best is None:
        raise FinsentError(f"no trial of study '{study.study_name}' completed ({counts['pruned']} pruned, "
                           f"{counts['fail']} failed); run more trials (--trials) or widen tune.space")
    return TuneResult(study_name=study.study_name, best_trial=best.number, best_value=best.value,
                      best_overrides={k: best.params[k] for k in cfg.space if k in best.params},
                      n_complete=counts["complete"], n_pruned=counts["pruned"], n_failed=counts["fail"],
                      storage=storage_path, parent_run_id=parent.info.run_id)


def write_overrides(params_file: Path, overrides: dict[str, Any], study: str, trial: int,
                    value: float | None = None) -> None:
    """Set each dotted key in params.yaml (comments kept) and record where the values came from in
    ``tune.applied``: params.yaml is logged with every run, so the next model's lineage names the trial."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from finsent.config import load_params

    params_file = Path(params_file)
    original = params_file.read_text(encoding="utf-8")
    yaml = YAML()
    yaml.preserve_quotes = True  # the smallest diff: the file's own quoting, indentation and nulls
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    yaml.representer.add_representer(float, _represent_float)
    document = yaml.load(original) or CommentedMap()
    for key, new in overrides.items():
        *path, leaf = key.split(".")
        node = document
        for part in path:
            if node.get(part) is None:
                node[part] = CommentedMap()
            node = node[part]
        node[leaf] = new
    if document.get("tune") is None:
        document["tune"] = CommentedMap()
    applied = CommentedMap([("study", study), ("trial", int(trial))]
                           + ([("value", round(float(value), 6))] if value is not None else []))
    applied.fa.set_flow_style()  # one line, so the key's comment stays beside it
    document["tune"]["applied"] = applied
    with params_file.open("w", encoding="utf-8") as handle:
        yaml.dump(document, handle)
    try:
        loaded = load_params(params_file)
        unread = [k for k, v in overrides.items() if _get(loaded, k) != v]
        if unread:
            raise FinsentError(f"params: {', '.join(unread)} did not read back as written")
    except FinsentError:
        params_file.write_text(original, encoding="utf-8")  # never leave a params.yaml that does not load
        raise


def _get(params: Params, key: str) -> Any:
    for part in key.split("."):
        params = getattr(params, part)
    return params


def _represent_float(representer, value: float):
    """5e-05 as 5.0e-05: YAML 1.1 readers (PyYAML, which load_params uses) take a mantissa without a dot
    for a string."""
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if exponent and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    if not math.isfinite(value):
        text = {"inf": ".inf", "-inf": "-.inf"}.get(text, ".nan")
    return representer.represent_scalar("tag:yaml.org,2002:float", text)
