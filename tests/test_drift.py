import json

import pandas as pd

from finsent.config import DriftParams
from finsent.data.drift import check_drift, profile, psi, stop_reason

from conftest import LABELS, sentences


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    assert psi([0.2, 0.5, 0.3], [0.2, 0.5, 0.3]) == 0
    assert 0 < psi([0.2, 0.5, 0.3], [0.25, 0.45, 0.3]) < psi([0.2, 0.5, 0.3], [0.6, 0.2, 0.2])


def _profile_file(tmp_path, frame, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(profile(frame, LABELS)))
    return path


def test_same_data_does_not_drift_and_shifted_data_does(tmp_path):
    reference = profile(sentences(20), LABELS)
    same = check_drift(reference, "champion", _profile_file(tmp_path, sentences(20), "same"), DriftParams(),
                       tmp_path / "same-report.json")
    assert same["compared"] and not same["drifted"]
    assert {c["check"]: c["observed"] for c in same["checks"]} == {"label_psi": 0, "length_psi": 0, "oov_rate": 0}

    negative_news = pd.DataFrame({"text": [f"Crypto exchange halts withdrawals amid bankruptcy fears, day {i}"
                                           for i in range(40)], "label": "negative"})
    shifted = check_drift(reference, "champion", _profile_file(tmp_path, negative_news, "shifted"),
                          DriftParams(action="fail"), tmp_path / "shifted-report.json")
    observed = {c["check"]: c for c in shifted["checks"]}
    assert shifted["drifted"] and all(c["drifted"] for c in observed.values())
    assert observed["oov_rate"]["observed"] > 0.5
    assert stop_reason(shifted).startswith("data drift against champion: label_psi")
    assert json.loads((tmp_path / "shifted-report.json").read_text())["drifted"] is True


def test_no_reference_is_reported_not_failed(tmp_path):
    report = check_drift(None, "'champion' (no champion yet)", _profile_file(tmp_path, sentences(5), "p"),
                         DriftParams(action="fail"), tmp_path / "r.json")
    assert report == {"compared": False, "reference": "'champion' (no champion yet)", "drifted": False,
                      "why": "no data profile for 'champion' (no champion yet)"}
    assert stop_reason(report) is None
