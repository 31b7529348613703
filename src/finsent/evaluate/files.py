"""The files the evaluate stage writes into its output folder. The evaluation writes them, the stage table
(``stages.py``: the onnx stage reads the predictions) and the flow (``layout.py``) find them: by these names."""

METRICS = "metrics.json"
TEST_PREDICTIONS = "test_predictions.parquet"  # per test row: id, true and predicted label, class probabilities
SLICES = "slices.json"  # figures per data source / text length
