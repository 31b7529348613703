"""Lineage audit: from a registered model version back to data, code, checks and decisions
(chain.py), proof that the stored artifacts are the recorded ones (verify.py), and a re-run that
shows the result reproduces (reproduce.py)."""
