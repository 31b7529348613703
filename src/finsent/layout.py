"""Where the flow finds the stage outputs it reads (the paths dvc.yaml declares), and its own reports."""

VALIDATION_REPORT = "reports/validation.json"
QUARANTINE = "data/quarantine/quarantine.parquet"
DATA_METRICS = "reports/data_metrics.json"  # the accounting, as DVC metrics
DATA_PROFILE = "reports/data_profile.json"  # the accepted data, summarised for drift checks
DRIFT_REPORT = "reports/drift.json"
SPLIT_DIR = "data/processed/split"
ADAPTER_DIR = "models/adapter"
TRAIN_REPORT = "reports/train.json"
EVAL_DIR = "reports/eval"
METRICS = "reports/eval/metrics.json"
GATE_REPORT = "reports/gate.json"
STAGES = ("sources", "ingest", "validate", "split", "tokenize", "train", "evaluate")
COMPARISON = "reports/comparison.json"
EVAL_REPORT_MD = "reports/evaluation_report.md"
