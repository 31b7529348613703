"""Bad input, one case per test, each with a file the test writes: either one clear error (naming the
file, and the line where there is one) with nothing written, or quarantined rows with a reason — and
in every case the accounting invariant holds: rows read = accepted + quarantined + duplicates merged."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os

import pandas as pd
import pytest

from finsent.config import DataParams, ValidationParams
from finsent.data.ingest import ingest
from finsent.data.sources import manifest
from finsent.data.validate import validate
from finsent.errors import FinsentError

LABELS = ["negative", "neutral", "positive"]
# row-level behaviour under test: dataset-level floors off
LENIENT = ValidationParams(min_rows=1, min_class_share=0.0, max_duplicate_rate=1.0, max_text_chars=1000)
GOOD = ["Operating profit rose to EUR 4 mn", "Net sales fell sharply in the quarter",
        "The company will publish its report in May", "Orders grew by 12 percent", "Shares slid after the warning"]
GOOD_LABELS = ["positive", "negative", "neutral", "positive", "negative"]


def good_csv(extra: str = "") -> str:
    return "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(GOOD, GOOD_LABELS)) + extra


def run(tmp_path, *sources, **data) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """sources -> ingest -> validate; asserts the accounting invariant; -> (report, accepted, quarantined)."""
    params = dataclasses.replace(DataParams(), sources=[str(s) for s in sources], **data)
    out = tmp_path / "out"
    summary = ingest(manifest(params)["files"], LABELS, params, out / "ingested.parquet", out / "ingest.json")
    report = validate(out / "ingested.parquet", LABELS, LENIENT, out / "accepted.parquet", out / "quarantine.parquet",
                      out / "validation.json")
    counts = report["accounting"]
    assert counts["rows_read"] == summary["rows_read"]
    assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_quarantined"] + counts["duplicates_merged"]
    accepted, quarantined = pd.read_parquet(out / "accepted.parquet"), pd.read_parquet(out / "quarantine.parquet")
    assert (len(accepted), len(quarantined)) == (counts["rows_accepted"], counts["rows_quarantined"])
    return report, accepted, quarantined


def fails(tmp_path, message: str, *sources, **data) -> None:
    """One clear, one-line error; nothing written, so nothing half-ingested can be trained on."""
    with pytest.raises(FinsentError, match=message) as error:
        run(tmp_path, *sources, **data)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out" / "ingested.parquet").exists()


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --- one clear error --------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    fails(tmp_path, "data source not found: .*nope.csv", tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    fails(tmp_path, "empty.csv: file is empty", write(tmp_path, "empty.csv", b""))


def test_header_only(tmp_path):
    fails(tmp_path, r"header.csv: no data rows \(header only\)", write(tmp_path, "header.csv", "text,label\n"))


def test_wrong_delimiter_names_the_columns_found_and_the_setting(tmp_path):
    source = write(tmp_path, "semi.csv", good_csv().replace(",", ";"))
    fails(tmp_path, r"missing column\(s\) text, label; found text;label; .*set data.delimiter", source,
          delimiter=",")


@pytest.mark.parametrize("column", ["text", "label"])
def test_missing_text_or_label_column(tmp_path, column):
    source = write(tmp_path, "cols.csv", good_csv().replace(column, "other", 1))
    fails(tmp_path, rf"cols.csv: missing column\(s\) {column}; found", source)


def test_integer_labels_without_a_map(tmp_path):
    source = write(tmp_path, "tweets.csv", "text,label\n" + "".join(f"{t},{i % 3}\n" for i, t in enumerate(GOOD)))
    fails(tmp_path, r"5 of 5 labels are not in .*'0' \(2 rows\).*map them in data.label_map", source)


def test_label_map_to_an_unknown_label(tmp_path):
    fails(tmp_path, r"label_map maps to bullish", write(tmp_path, "a.csv", good_csv()), label_map={"1": "bullish"})


def test_binary_file(tmp_path):
    fails(tmp_path, r"blob.csv: looks binary", write(tmp_path, "blob.csv", bytes(range(256)) * 64))


def test_ragged_row_names_the_line(tmp_path):
    source = write(tmp_path, "ragged.csv", good_csv("Profit rose, again,positive\n"))
    fails(tmp_path, r"ragged.csv: Expected 2 fields in line 7, saw 3", source)


def test_invalid_json_line_names_the_line(tmp_path):
    source = write(tmp_path, "rows.jsonl", '{"text": "Profit rose", "label": "positive"}\n{"text": "Sales fell",\n')
    fails(tmp_path, r"rows.jsonl:2: not valid JSON", source)


def test_phrasebank_line_without_separator(tmp_path):
    source = write(tmp_path, "Sentences_X.txt", "Profit rose .@positive\nSales fell without a label\n")
    fails(tmp_path, r"Sentences_X.txt:2: expected 'sentence@label'", source, format="phrasebank")


def test_unknown_encoding_name(tmp_path):
    fails(tmp_path, r"unknown data.encoding 'klingon'", write(tmp_path, "a.csv", good_csv()), encoding="klingon")


def test_directory_instead_of_a_file_is_a_drop_folder_and_must_hold_data(tmp_path):
    (tmp_path / "incoming" / "sub").mkdir(parents=True)
    write(tmp_path, "incoming/.gitkeep", b"")
    fails(tmp_path, r"drop folder .*incoming holds no data files", tmp_path / "incoming")


def test_symlink_loop(tmp_path):
    loop = tmp_path / "loop.csv"
    os.symlink(loop, loop)
    fails(tmp_path, r"loop.csv: symlink loop", loop)


def test_path_traversal_out_of_a_drop_folder_is_refused(tmp_path):
    write(tmp_path, "secret.csv", good_csv())
    write(tmp_path, "incoming/batch.csv", good_csv())
    os.symlink("../secret.csv", tmp_path / "incoming" / "escape.csv")
    fails(tmp_path, r"escape.csv: resolves outside the drop folder", tmp_path / "incoming")


def test_corrupt_gzip(tmp_path):
    fails(tmp_path, r"bad.csv: starts like gzip but does not decompress",
          write(tmp_path, "bad.csv", gzip.compress(good_csv().encode())[:30]))


# --- quarantine with a reason, or read correctly ----------------------------------------------------------

def test_extra_columns_are_ignored_and_reported(tmp_path):
    source = write(tmp_path, "wide.csv", "id,text,label,ticker\n" + "".join(
        f"{i},{t},{lab},NOK\n" for i, (t, lab) in enumerate(zip(GOOD, GOOD_LABELS))))
    _, accepted, _ = run(tmp_path, source)
    assert len(accepted) == 5
    assert (tmp_path / "out" / "ingest.json").read_text().count('"ticker"') == 1


def test_a_few_unknown_labels_are_quarantined(tmp_path):
    source = write(tmp_path, "typo.csv", good_csv("Margins improved,postive\n" + "".join(
        f"Quarter {i} results were in line,neutral\n" for i in range(5))))
    _, _, quarantined = run(tmp_path, source)
    assert quarantined["reason"].tolist() == ["label_not_in_label_set"]
    assert quarantined["label"].tolist() == ["postive"] and quarantined["source_record"].tolist() == [6]


def test_missing_empty_and_whitespace_text(tmp_path):
    csv_source = write(tmp_path, "gaps.csv", good_csv(",positive\n\"   \t \",neutral\n"))
    json_source = write(tmp_path, "gaps.jsonl", '{"text": null, "label": "negative"}\n'
                                                '{"text": "Revenue doubled", "label": "positive"}\n')
    _, accepted, quarantined = run(tmp_path, csv_source, json_source)
    reasons = dict(zip(zip(quarantined["source"], quarantined["source_record"]), quarantined["reason"]))
    assert reasons == {("gaps.csv", 6): "text_length_out_of_bounds", ("gaps.csv", 7): "text_length_out_of_bounds",
                       ("gaps.jsonl", 1): "text_missing"}
    assert len(accepted) == 6


def test_missing_label(tmp_path):
    _, _, quarantined = run(tmp_path, write(tmp_path, "a.csv", good_csv("Revenue doubled,\n")))
    assert quarantined["reason"].tolist() == ["label_missing"]


def test_ten_megabyte_single_row(tmp_path):
    source = write(tmp_path, "huge.csv", good_csv("\"" + "Profit rose. " * 800_000 + "\",positive\n"))
    _, accepted, quarantined = run(tmp_path, source)
    assert quarantined["reason"].tolist() == ["text_length_out_of_bounds"]
    assert quarantined["expectations"].tolist() == ["expect_column_value_lengths_to_be_between(text)"]
    assert len(quarantined["text"].iloc[0]) > 10_000_000 - 1_000_000  # kept whole: nothing lost
    assert len(accepted) == 5


def test_binary_bytes_inside_one_row(tmp_path):
    source = write(tmp_path, "ctrl.csv", good_csv().encode() + b"Profit\x00\x07 rose,positive\n")
    _, accepted, quarantined = run(tmp_path, source)
    assert quarantined["reason"].tolist() == ["control_characters_or_undecodable_bytes"]
    assert len(accepted) == 5


def test_invalid_utf8_in_a_utf8_file_quarantines_only_that_row(tmp_path):
    body = good_csv("Revenue of 5 \u20ac mn,positive\nNet sales in Espoo fell,negative\n").encode("utf-8")
    source = write(tmp_path, "damaged.csv", body + b"Caf\xe9 sales fell,negative\n")
    _, accepted, quarantined = run(tmp_path, source)
    assert quarantined["source_record"].tolist() == [8]
    assert quarantined["reason"].tolist() == ["control_characters_or_undecodable_bytes"]
    assert "Revenue of 5 \u20ac mn" in accepted["text"].tolist()


def test_invalid_utf8_with_declared_encoding(tmp_path):
    source = write(tmp_path, "declared.csv", good_csv().encode() + b"Caf\xe9 sales fell,negative\n")
    _, accepted, quarantined = run(tmp_path, source, encoding="utf-8")
    assert quarantined["reason"].tolist() == ["control_characters_or_undecodable_bytes"] and len(accepted) == 5


def test_latin1_file_is_decoded(tmp_path):
    source = write(tmp_path, "legacy.csv", good_csv("Caf\u00e9 chain sales fell,negative\n").encode("cp1252"))
    _, accepted, _ = run(tmp_path, source)
    assert "Caf\u00e9 chain sales fell" in accepted["text"].tolist()


def test_byte_order_mark(tmp_path):
    _, accepted, _ = run(tmp_path, write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + good_csv().encode()))
    assert len(accepted) == 5 and not accepted["text"].str.contains("\ufeff").any()


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_endings(tmp_path, newline):
    _, accepted, _ = run(tmp_path, write(tmp_path, "win.csv", good_csv().replace("\n", newline)))
    assert sorted(accepted["text"]) == sorted(GOOD) and sorted(accepted["label"]) == sorted(GOOD_LABELS)


def test_quotes_and_embedded_newlines(tmp_path):
    source = write(tmp_path, "quoted.csv", good_csv('"CEO said ""record year""\nfor the group",positive\n'))
    _, accepted, _ = run(tmp_path, source)
    assert 'CEO said "record year" for the group' in accepted["text"].tolist()


def test_duplicate_rows_are_merged_and_counted(tmp_path):
    _, accepted, _ = run(tmp_path, write(tmp_path, "dup.csv", good_csv(f"{GOOD[0]},positive\n{GOOD[0]}  ,positive\n")))
    assert len(accepted) == 5
    assert accepted["text"].tolist().count(GOOD[0]) == 1


def test_conflicting_labels_quarantine_every_copy(tmp_path):
    _, accepted, quarantined = run(tmp_path, write(tmp_path, "c.csv", good_csv(f"{GOOD[0]},negative\n")))
    assert quarantined["reason"].tolist() == ["conflicting_labels_for_same_text"] * 2 and len(accepted) == 4


def test_formula_injection_is_quarantined_but_signed_figures_are_not(tmp_path):
    source = write(tmp_path, "f.csv", good_csv('"=cmd|\' /C calc\'!A0",positive\n"@SUM(1+1)*cmd",neutral\n'
                                               '"+HYPERLINK(""http://x"")",neutral\n-3% margin squeeze hit Q2,negative\n'))
    _, accepted, quarantined = run(tmp_path, source)
    assert quarantined["reason"].tolist() == ["formula_injection"] * 3
    assert "-3% margin squeeze hit Q2" in accepted["text"].tolist()


def test_gzip_file_named_csv_is_read(tmp_path):
    _, accepted, _ = run(tmp_path, write(tmp_path, "packed.csv", gzip.compress(good_csv().encode())))
    assert len(accepted) == 5
    assert '"compression": "gzip"' in (tmp_path / "out" / "ingest.json").read_text()


def test_drop_folder_ingests_each_content_once(tmp_path):
    write(tmp_path, "incoming/monday.csv", good_csv())
    write(tmp_path, "incoming/monday-copy.csv", good_csv())  # the same batch dropped twice
    write(tmp_path, "incoming/tue/more.csv", "text,label\nGuidance raised for the year,positive\n")
    report, accepted, _ = run(tmp_path, tmp_path / "incoming")
    assert report["accounting"]["rows_read"] == 6 and len(accepted) == 6
    files = json.loads((tmp_path / "out" / "ingest.json").read_text())["files"]
    assert [(f["source"], f.get("skipped")) for f in files] == [
        ("incoming/monday-copy.csv", None), ("incoming/monday.csv", "same content as incoming/monday-copy.csv"),
        ("incoming/tue/more.csv", None)]


def test_sources_combine_with_their_own_settings(tmp_path):
    csv_source = write(tmp_path, "news.csv", good_csv())
    tweets = write(tmp_path, "tweets.tsv", "tweet\tsentiment\nStock up 5% on guidance\tbullish\n"
                                           "Shares tank on weak outlook\tbearish\n")
    data = DataParams(sources=[str(csv_source), {"path": str(tweets), "text_column": "tweet",
                                                 "label_column": "sentiment",
                                                 "label_map": {"bullish": "positive", "bearish": "negative"}}])
    out = tmp_path / "out"
    ingest(manifest(data)["files"], LABELS, data, out / "ingested.parquet")
    frame = pd.read_parquet(out / "ingested.parquet")
    assert frame.groupby("source").size().to_dict() == {"news.csv": 5, "tweets.tsv": 2}
    assert frame.loc[frame["source"] == "tweets.tsv", "label"].tolist() == ["positive", "negative"]


# --- cases found by trying to break it -------------------------------------------------------------------

def test_every_row_quarantined_is_the_dataset_check_failing_with_its_name(tmp_path):
    path = write(tmp_path, "allbad.csv", "text,label\n,positive\n  ,negative\nx,neutral\n")
    params = dataclasses.replace(DataParams(), sources=[str(path)])
    out = tmp_path / "out"
    ingest(manifest(params)["files"], LABELS, params, out / "ingested.parquet")
    with pytest.raises(FinsentError, match=r"min_rows \(expect_table_row_count_to_be_between\): observed 0") as err:
        validate(out / "ingested.parquet", LABELS, ValidationParams(), out / "accepted.parquet",
                 out / "quarantine.parquet", out / "validation.json")
    assert "\n" not in str(err.value) and "3 quarantined" in str(err.value)
    assert len(pd.read_parquet(out / "quarantine.parquet")) == 3 and not (out / "accepted.parquet").exists()


def test_text_that_is_not_a_string_is_quarantined(tmp_path):
    lines = [json.dumps({"text": t, "label": lab}) for t, lab in zip(GOOD, GOOD_LABELS)]
    lines += [json.dumps({"text": {"headline": "Profit rose"}, "label": "positive"}),
              json.dumps({"text": ["Sales", "fell"], "label": "negative"})]
    report, accepted, quarantined = run(tmp_path, write(tmp_path, "objects.jsonl", "\n".join(lines) + "\n"))
    assert len(accepted) == 5 and list(quarantined["reason"]) == ["text_not_a_string"] * 2
    assert "not a string (dict)" in quarantined["text"].iloc[0]
    structs = pd.DataFrame({"text": [{"a": t} for t in GOOD], "label": GOOD_LABELS})  # a Parquet struct column
    structs.to_parquet(tmp_path / "structs.parquet")
    with pytest.raises(FinsentError, match="0 rows accepted, 5 quarantined"):
        run(tmp_path / "second", tmp_path / "structs.parquet")
    quarantined = pd.read_parquet(tmp_path / "second" / "out" / "quarantine.parquet")
    assert set(quarantined["reason"]) == {"text_not_a_string"} and len(quarantined) == 5


@pytest.mark.parametrize("character", ["\u202e", "\u200b", "\u2066", "\ufeff"])
def test_invisible_format_characters_are_quarantined_or_stripped(tmp_path, character):
    from finsent.config import NormalizeParams

    path = write(tmp_path, "hidden.csv", good_csv(f"Profit{character} rose sharply,positive\n"))
    _, accepted, quarantined = run(tmp_path, path)
    assert len(accepted) == 5 and list(quarantined["reason"]) == ["invisible_format_characters"]
    _, accepted, quarantined = run(tmp_path, path, normalize=NormalizeParams(strip_format_characters=True))
    assert len(accepted) == 6 and quarantined.empty and "Profit rose sharply" in set(accepted["text"])


def test_quarantined_texts_are_shown_with_their_invisible_characters_escaped(tmp_path):
    from finsent.data.validate import escaped, quarantine_examples

    path = write(tmp_path, "hidden.csv", good_csv("Profit\u202e rose sharply,positive\n=HYPERLINK(x),neutral\n"))
    _, _, quarantined = run(tmp_path, path)
    lines = quarantine_examples(tmp_path / "out" / "quarantine.parquet")
    assert len(lines) == len(quarantined) == 2
    assert lines[0].endswith("invisible_format_characters: 'Profit\\u202e rose sharply'"), lines
    assert all(line.isprintable() for line in lines)
    assert escaped("a\tb\x00c\u200bd" + "x" * 100, limit=8) == "'a\\tb\\x00c\\u200bdx'..."


def test_a_column_name_given_twice_is_refused(tmp_path):
    fails(tmp_path, "'text' appear more than once in the header",
          write(tmp_path, "dup.csv", "text,label,text\nProfit rose,positive,x\n"))
    fails(tmp_path, "'label' appear more than once in the object on line 1",
          write(tmp_path, "dup.jsonl", '{"text": "Profit rose", "label": "positive", "label": "negative"}\n'))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_are_read(tmp_path, encoding):
    content = good_csv("Umsatz stieg in Hämeenlinna,positive\n")
    raw = content.encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw  # with its byte-order mark, as editors write it
    _, accepted, _ = run(tmp_path, write(tmp_path, "wide.csv", raw))
    assert len(accepted) == 6 and "Umsatz stieg in Hämeenlinna" in set(accepted["text"])


def test_a_few_damaged_bytes_in_an_ascii_file_quarantine_only_those_rows(tmp_path):
    path = write(tmp_path, "ascii.csv", good_csv().encode() + b"Sales fell \xff\xfe again,negative\n")
    _, accepted, quarantined = run(tmp_path, path)
    assert len(accepted) == 5 and list(quarantined["reason"]) == ["control_characters_or_undecodable_bytes"]


def test_a_gzip_bomb_stops_at_the_size_cap(tmp_path):
    path = tmp_path / "bomb.csv.gz"
    with gzip.open(path, "wb", compresslevel=9) as stream:
        stream.write(good_csv().encode())
        for _ in range(12):
            stream.write(b"0" * 2**20)
    assert path.stat().st_size < 100_000
    fails(tmp_path, r"unpacks to more than data.max_file_mb \(8 MB\)", path, max_file_mb=8)


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path):
    path = write(tmp_path, "big.csv", good_csv() + "x" * (2 * 2**20) + ",positive\n")
    fails(tmp_path, r"more than data.max_file_mb \(1\)", path, max_file_mb=1)
