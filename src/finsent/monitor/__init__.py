"""The finance sentiment monitor: score new, unlabelled text with the champion (score.py), aggregate
per period and entity and raise negative-share spike alerts (aggregate.py), and compare the batch's
predictions with the champion's test-set predictions (prediction_drift.py)."""
