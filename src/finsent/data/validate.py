"""Validate stage: Great Expectations suites, quarantine and the row accounting.

Row-level expectations (text present and a string, length within bounds, no control characters, binary or
undecodable bytes, no invisible format characters, no spreadsheet-formula prefix, label present and in the
label set) decide per row: failing rows go to the quarantine file with the failed
expectation(s) as the reason, and do not fail the run. Dataset-level expectations (duplicate rate
on the ingested rows; columns, minimum rows and a minimum share per class on the accepted rows)
fail the stage with the check's name, the observed value and the threshold.
Invariant, checked every run: rows_read = accepted + quarantined + duplicates_merged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from finsent.config import ValidationParams
from finsent.data.drift import profile
from finsent.data.gx_project import publish_docs, run_suite
from finsent.data.ingest import CANONICAL_COLUMNS, FORMAT_CHARACTERS
from finsent.data.readers import NOT_A_STRING
from finsent.errors import FinsentError

_ROW = "_row"  # positional row key handed to GX so it can name the failing rows
CONTROL_CHARACTERS = r"[\x00-\x08\x0e-\x1f\x7f\ufffd]"  # binary bytes, or bytes that failed to decode


# A cell starting like a spreadsheet formula (=, @, or +/- then a function or a pipe) runs code when
# an analyst opens a CSV export of the data in Excel: no training sentence looks like that.
FORMULA_PREFIX = r"^\s*(?:=|@|[+-]\s*[A-Za-z_][A-Za-z0-9_.]*\s*[(|!])"


def _row_expectations(labels: list[str], params: ValidationParams) -> list:
    """Each expectation's ``meta.reason`` is what a quarantined row carries as its reason."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="text", meta={"reason": "text_missing"}),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=params.min_text_chars,
                                                max_value=params.max_text_chars,
                                                meta={"reason": "text_length_out_of_bounds"}),
        gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_CHARACTERS,
                                              meta={"reason": "control_characters_or_undecodable_bytes"}),
        gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=FORMULA_PREFIX,
                                              meta={"reason": "formula_injection"}),
        gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=FORMAT_CHARACTERS,
                                              meta={"reason": "invisible_format_characters"}),
        gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=f"^{NOT_A_STRING}",
                                              meta={"reason": "text_not_a_string"}),
        gxe.ExpectColumnValuesToNotBeNull(column="label", meta={"reason": "label_missing"}),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels),
                                        meta={"reason": "label_not_in_label_set"}),
    ]


def _duplicate_expectations(params: ValidationParams) -> list:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
        column="id", min_value=1 - params.max_duplicate_rate,
        meta={"check": "max_duplicate_rate", "threshold": params.max_duplicate_rate})]


def _dataset_expectations(labels: list[str], params: ValidationParams) -> list:
    import great_expectations.expectations as gxe

    # "share of rows whose label is not one of the others >= min share" is "this label's share >= min share"
    shares = [gxe.ExpectColumnValuesToNotBeInSet(
        column="label", value_set=[other for other in labels if other != name], mostly=params.min_class_share,
        meta={"check": f"min_class_share[{name}]", "threshold": params.min_class_share}) for name in labels]
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=CANONICAL_COLUMNS, exact_match=False,
                                         meta={"check": "required_columns", "threshold": CANONICAL_COLUMNS}),
        gxe.ExpectTableRowCountToBeBetween(min_value=params.min_rows,
                                           meta={"check": "min_rows", "threshold": params.min_rows}),
        *shares,
    ]


def _failed_rows(result: dict) -> dict[int, list[tuple[str, str]]]:
    """Row position -> (reason, GX expectation) of each row-level expectation it failed."""
    reasons: dict[int, list[tuple[str, str]]] = {}
    for check in result["results"]:
        if check["success"]:
            continue
        config = check["expectation_config"]
        expectation = f"{config['type']}({config['kwargs'].get('column', '')})"
        reason = (config.get("meta") or {}).get("reason") or expectation
        for entry in check["result"].get("unexpected_index_list") or []:
            reasons.setdefault(int(entry[_ROW]), []).append((reason, expectation))
    return reasons


def _observed(check: dict):
    config, result = check["expectation_config"], check["result"]
    if config["type"] == "expect_column_proportion_of_unique_values_to_be_between":  # as the duplicate rate
        return round(1 - result["observed_value"], 4) if result.get("observed_value") is not None else 0.0
    if config["type"] == "expect_column_values_to_not_be_in_set" and "unexpected_percent" in result:
        percent = result["unexpected_percent"]  # None when no row was accepted at all
        return round(1 - percent / 100, 4) if percent is not None else 0.0  # reported as the class share
    return result.get("observed_value", result.get("unexpected_count"))


def _compact(result: dict) -> dict:
    """The GX result without the per-row lists (the quarantine file holds those rows, reasons included)
    and with long sample values cut, so a 10 MB row does not make a 10 MB report."""
    def cut(value):
        return value[:200] + "..." if isinstance(value, str) and len(value) > 200 else value

    result = json.loads(json.dumps(result, default=str))
    for check in result["results"]:
        for key in ("unexpected_list", "unexpected_index_list", "unexpected_index_query"):
            check["result"].pop(key, None)
        for key in ("partial_unexpected_list", "partial_unexpected_index_list"):
            if key in check["result"]:
                check["result"][key] = [cut(v) for v in check["result"][key]]
        counts = check["result"].get("partial_unexpected_counts") or []
        for entry in counts:
            entry["value"] = cut(entry.get("value"))
    return result


def _summarise(result: dict) -> list[dict]:
    return [{"check": (c["expectation_config"].get("meta") or {}).get("check"),
             "expectation": c["expectation_config"]["type"],
             "column": c["expectation_config"]["kwargs"].get("column"),
             "success": c["success"], "observed": _observed(c),
             "threshold": (c["expectation_config"].get("meta") or {}).get("threshold")}
            for c in result["results"]]


def validate(ingested: Path, labels: list[str], params: ValidationParams, accepted_out: Path,
             quarantine_out: Path, report_out: Path, gx_project: Path | None = None,
             docs_dir: Path | None = None, profile_out: Path | None = None,
             metrics_out: Path | None = None) -> dict:
    """``gx_project``: the folder holding ``gx/`` (file-backed suites, stored results, Data Docs built into
    ``docs_dir``); None runs the same suites in an ephemeral context."""
    frame = pd.read_parquet(ingested).reset_index(drop=True)
    gx = {"project": gx_project, "build_docs": gx_project is not None and docs_dir is not None,
          "data_asset": " + ".join(sorted(frame["source"].astype(str).unique())) if "source" in frame else None}
    rows_read = len(frame)
    checked = frame.assign(**{_ROW: range(rows_read)})
    row_result = run_suite(checked, "finsent_rows", _row_expectations(labels, params), row_key=_ROW, **gx)
    duplicate_result = run_suite(frame, "finsent_duplicates", _duplicate_expectations(params), **gx)
    reasons = _failed_rows(row_result)
    bad = checked[_ROW].isin(reasons)
    failed = [reasons[i] for i in checked.loc[bad, _ROW]]
    quarantined = frame[bad].assign(reason=[", ".join(r for r, _ in f) for f in failed],
                                    expectations=[", ".join(e for _, e in f) for f in failed])
    passed = frame[~bad]

    # Same text, different labels: the truth is unknown, so quarantine every copy rather than guess.
    label_sets = passed.groupby("id")["label"].nunique()
    conflicting = passed["id"].isin(label_sets[label_sets > 1].index)
    quarantined = pd.concat([quarantined, passed[conflicting].assign(reason="conflicting_labels_for_same_text",
                                                                     expectations="")])
    passed = passed[~conflicting]
    accepted = passed.drop_duplicates(subset=["id"], keep="first")
    duplicates_merged = len(passed) - len(accepted)

    accounting = {"rows_read": rows_read, "rows_accepted": len(accepted), "rows_quarantined": len(quarantined),
                  "duplicates_merged": duplicates_merged}
    if rows_read != len(accepted) + len(quarantined) + duplicates_merged:  # pragma: no cover - invariant guard
        raise FinsentError(f"row accounting broken: {accounting}")

    dataset_result = run_suite(accepted.reset_index(drop=True), "finsent_dataset",
                               _dataset_expectations(labels, params), **gx)
    if gx["build_docs"]:
        publish_docs(gx_project, docs_dir)
    dataset_checks = _summarise(duplicate_result) + _summarise(dataset_result)
    report = {"success": all(c["success"] for c in dataset_checks), "accounting": accounting,
              "label_counts": {k: int(v) for k, v in accepted["label"].value_counts().sort_index().items()},
              "row_checks": _summarise(row_result), "dataset_checks": dataset_checks,
              "gx": {"rows": _compact(row_result), "duplicates": duplicate_result, "dataset": dataset_result}}
    for path in (accepted_out, quarantine_out, report_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    report_out.write_text(json.dumps(report, indent=2, default=str))
    quarantined.to_parquet(quarantine_out, index=False)
    if metrics_out is not None:  # `dvc metrics show` / `dvc metrics diff` across runs
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps({**accounting, "dataset_checks_passed": report["success"],
                                           "label_counts": report["label_counts"]}, indent=2) + "\n")
    if not report["success"]:
        failed = [c for c in report["dataset_checks"] if not c["success"]]
        named = "; ".join(f"{c['check']} ({c['expectation']}): observed {c['observed']}, threshold {c['threshold']}"
                          for c in failed)
        raise FinsentError(f"dataset check failed: {named} ({accounting['rows_accepted']} rows accepted, "
                           f"{accounting['rows_quarantined']} quarantined -> {quarantine_out})")
    accepted.to_parquet(accepted_out, index=False)
    if profile_out is not None:  # what later datasets are compared with for drift
        profile_out.write_text(json.dumps(profile(accepted, labels), indent=1) + "\n")
    return report


def escaped(text, limit: int = 80) -> str:
    """``text`` quoted with every invisible or control character written as an escape (a U+202E shows as
    \\u202e, not as a reversed line), cut to ``limit`` characters: safe to print on any terminal."""
    text = str(text)
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    return f"'{shown}'" + ("..." if len(text) > limit else "")


def quarantine_examples(quarantine: Path, limit: int = 5) -> list[str]:
    """The first ``limit`` quarantined rows as lines: where the row came from, why, and its text escaped."""
    frame = pd.read_parquet(quarantine) if quarantine.is_file() else pd.DataFrame()
    return [f"{row.get('source', '?')} record {row.get('source_record', '?')}: {row['reason']}: {escaped(row['text'])}"
            for row in frame.head(limit).to_dict("records")]
