"""Where the flow finds what the stages write (read from the stage table, src/finsent/stages.py), and the
reports the flow writes itself after the stages."""

from finsent.evaluate import files as evaluation_files
from finsent.stages import path

VALIDATION_REPORT = path("validate", "report")
QUARANTINE = path("validate", "quarantine")
DATA_METRICS = path("validate", "metrics")  # the accounting, as DVC metrics
DATA_PROFILE = path("validate", "profile")  # the accepted data, summarised for drift checks
SPLIT_DIR = path("split", "out")
TEST_SPLIT = path("evaluate", "test")
ADAPTER_DIR = path("train", "out")
ONNX_DIR = path("onnx", "out")  # the ONNX model the version is served with, and why
SERVED_PREDICTIONS = path("onnx", "predictions")  # the test predictions of that backend
TRAIN_REPORT = path("train", "report")
EVAL_DIR = path("evaluate", "out")
METRICS = f"{EVAL_DIR}/{evaluation_files.METRICS}"
TEST_PREDICTIONS = path("onnx", "reference")  # the evaluation's test predictions (torch), inside EVAL_DIR
SLICE_METRICS = f"{EVAL_DIR}/{evaluation_files.SLICES}"  # per data source / text length
INGESTED = path("ingest", "out")
INGEST_REPORT = path("ingest", "report")
DATA_DOCS = path("validate", "docs")
ACCEPTED = path("validate", "out")
TOKENIZED = path("tokenize", "out")

REPORTS_DIR = "reports"  # every report above lives here; logged to the candidate's MLflow run as "reports/"

# the lineage a candidate's MLflow run carries (logged by registry.log_candidate, read by finsent lineage)
LINEAGE_DIR = "lineage"
LINEAGE_RECORD = f"{LINEAGE_DIR}/lineage.json"
LINEAGE_LOCK = f"{LINEAGE_DIR}/dvc.lock"
LINEAGE_PARAMS = f"{LINEAGE_DIR}/params.yaml"

# written by the flow after the stages (not DVC outputs)
DRIFT_REPORT = "reports/drift.json"
GATE_REPORT = "reports/gate.json"
COMPARISON = "reports/comparison.json"
EVAL_REPORT_MD = "reports/evaluation_report.md"
MODEL_CARD = "reports/model_card.md"  # + model_card.html; the model version's description
CARD_HEADING = "# Model card: "

