"""Where the pipeline's outputs live inside a project (dvc.yaml declares the same paths)."""

INGESTED = "data/interim/ingested.parquet"
ACCEPTED = "data/processed/accepted.parquet"
QUARANTINE = "data/quarantine/quarantine.parquet"
VALIDATION_REPORT = "reports/validation.json"
SPLIT_DIR = "data/processed/split"
TOKENIZED_DIR = "data/tokenized"
ADAPTER_DIR = "models/adapter"
TRAIN_REPORT = "reports/train.json"
EVAL_DIR = "reports/eval"
METRICS = "reports/eval/metrics.json"
GATE_REPORT = "reports/gate.json"
STAGES = ("ingest", "validate", "split", "tokenize", "train", "evaluate")
