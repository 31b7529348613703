"""The real Financial PhraseBank (referenced from ../shared, never copied): its known quirks are handled.
Skips when the folder is absent."""

import os
from pathlib import Path

import pytest

from finsent.cli import main

REPO = Path(__file__).resolve().parents[1]
FOLDER = Path(os.environ.get("FINSENT_PHRASEBANK_DIR", REPO.parent / "shared" / "datasets" / "financial_phrasebank"))


@pytest.mark.skipif(not FOLDER.is_dir(), reason=f"Financial PhraseBank not found at {FOLDER}")
@pytest.mark.parametrize("name, read, quarantined, merged", [
    ("Sentences_50Agree.txt", 4846, 4, 6),   # 2 sentences carry two different labels: all 4 rows quarantined
    ("Sentences_66Agree.txt", 4217, 0, 6),
    ("Sentences_75Agree.txt", 3453, 0, 5),
    ("Sentences_AllAgree.txt", 2264, 0, 5),
])
def test_phrasebank_files_validate_with_their_quirks_accounted(tmp_path, capsys, name, read, quarantined, merged):
    assert main(["--params", str(REPO / "params.yaml"), "validate", str(FOLDER / name), "--out", str(tmp_path)]) == 0
    accepted = read - quarantined - merged
    assert (f"read {read} = accepted {accepted} + quarantined {quarantined} + duplicates merged {merged}"
            in capsys.readouterr().out)


def test_validate_command_fails_on_a_dataset_check_and_still_accounts(tmp_path, capsys):
    source = tmp_path / "tiny.csv"
    source.write_text("text,label\nOperating profit rose,positive\n  \t ,neutral\n")
    assert main(["--params", str(REPO / "params.yaml"), "validate", str(source), "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert "read 2 = accepted 1 + quarantined 1 + duplicates merged 0" in captured.out
    assert "min_rows (expect_table_row_count_to_be_between): observed 1, threshold 30" in captured.err
