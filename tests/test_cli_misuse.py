"""Every subcommand called wrongly (missing, wrong-typed and nonsensical arguments, missing inputs, unusable
stores): a non-zero exit, exactly one line on stderr, never a traceback, and nothing written where it must not.

The calls run in-process through ``finsent.cli.main`` (one import of the libraries for all of them), in a scratch
project whose MLflow store is a fresh SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from projects import make_project

MISUSE = [
    # (arguments, a phrase the one line must contain)
    (["stage"], "the following arguments are required"),
    (["stage", "nosuchstage", "--out", "x"], "invalid choice"),
    (["stage", "ingest", "--out", "x"], "needs --input"),
    (["stage", "validate", "--out", "x"], "needs --input, --quarantine, --report"),
    (["stage", "validate", "--input", "nope.parquet", "--out", "x", "--quarantine", "q", "--report", "r"],
     "--input nope.parquet not found"),
    (["stage", "split", "--input", "nope.parquet", "--out", "x"], "not found"),
    (["stage", "tokenize", "--input", "nope", "--out", "x"], "not found"),
    (["stage", "train", "--input", "nope", "--out", "x", "--report", "r.json"], "not found"),
    (["stage", "evaluate", "--input", "nope", "--out", "x"], "needs --test"),
    (["stage", "evaluate", "--input", "nope", "--test", "t.parquet", "--out", "x"], "not found"),
    (["stage", "sources", "--out", "x", "--quarantine", "q"], "finsent stage sources has no --quarantine"),
    (["promote", "999", "--force", "--reason", "x"], "has no version 999"),
    (["promote", "abc", "--force", "--reason", "x"], "give a registered version number"),
    (["promote", "0", "--force", "--reason", "x"], "give a registered version number"),
    (["promote", "-1", "--force", "--reason", "x"], "give a registered version number"),
    (["promote", "1", "--reason", "x"], "pass --force"),
    (["promote", "1"], "the following arguments are required: --reason"),
    (["approve", "999", "--reason", "x"], "has no version 999; nothing approved"),
    (["approve", "abc", "--reason", "x"], "give a registered version number"),
    (["approve", "1"], "the following arguments are required: --reason"),
    (["reject", "0", "--reason", "x"], "give a registered version number"),
    (["reject", "999", "--reason", "x"], "has no version 999; nothing rejected"),
    (["history", "--at", "notadate"], "not an ISO date/time"),
    (["card"], "the following arguments are required: ref"),
    (["card", "7"], "finsent-sentiment/7: not in the registry"),
    (["card", "no such/ref"], "use <name>@<alias> or <name>/<version>"),
    (["rollback"], "the following arguments are required: --reason"),
    (["export", "nope", "--out", "merged"], "not an adapter bundle"),
    (["export", "--out", "/etc/passwd"], "not an adapter bundle"),
    (["validate"], "the following arguments are required: sources"),
    (["validate", "nope.csv"], "not found"),
    (["reproduce", "--workdir", "/etc/passwd", "finsent-sentiment/1"], "not in the registry"),
    (["lineage", "nope"], "use <name>@<alias> or <name>/<version>"),
    (["lineage", "verify", "finsent-sentiment/7"], "finsent-sentiment/7"),
    (["predict"], "the following arguments are required: text"),
    (["predict", ""], "blank"),
    (["predict", "profit rose", "--model", "runs:/abc/model"], "models:/NAME/VERSION or models:/NAME@ALIAS"),
    (["predict", "profit rose"], "finsent-sentiment"),
    (["fetch", "--out", "/etc/passwd"], "not an empty folder"),
    (["monitor"], "the following arguments are required: --input"),
    (["monitor", "--input", "nope.csv"], "--input nope.csv: not found"),
    (["monitor", "--input", "data/slice.csv"], "no 'champion' for 'finsent-sentiment' yet"),
    (["run", "--data", "nope.csv"], "data source not found: nope.csv"),
    (["run", "-S", "epochs"], "expected section.key=value"),
    (["run", "-S", "train.nope=1"], "params.yaml has no 'nope' in train"),
    (["run", "-S", "train.epochs=eight"], "train.epochs must be int"),
    (["run", "-S", "train.epochs=[1"], "the value is not valid YAML"),
    (["--params", "other.yaml", "run"], "always reads the project's params.yaml"),
    (["--params", "nope.yaml", "history"], "params file not found: nope.yaml"),
    (["tune", "--trials", "abc"], "invalid int value"),
    (["tune"], "no tokenized data"),
    (["doctor", "--bogus"], "unrecognized arguments: --bogus"),
    (["nosuchcommand"], "invalid choice"),
    ([], "the following arguments are required: command"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("misuse") / "project", 5)


@pytest.fixture()
def in_project(project, monkeypatch, tmp_path):
    """cwd = the scratch project, its own SQLite store; the environment restored afterwards (main() sets
    defaults in os.environ)."""
    saved = dict(os.environ)
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield project
    os.environ.clear()
    os.environ.update(saved)


def _call(arguments: list[str], capsys) -> tuple[int, str, str]:
    from finsent.cli import main

    try:
        code = main(arguments)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("arguments, phrase", MISUSE, ids=[" ".join(a) or "(nothing)" for a, _ in MISUSE])
def test_a_wrong_call_is_one_line_and_no_traceback(in_project, capsys, arguments, phrase):
    params_before = (in_project / "params.yaml").read_bytes()
    code, out, err = _call(arguments, capsys)
    assert code not in (0, None), (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert phrase in lines[0], lines[0]
    assert (in_project / "params.yaml").read_bytes() == params_before, "a refused call must not change params.yaml"
    assert Path("/etc/passwd").is_file()


@pytest.mark.parametrize("uri, phrase", [("garbage://x", "MLflow (garbage://x)"),
                                         ("http://127.0.0.1:9", "cannot read the alias history")])
def test_an_unusable_tracking_store_is_an_error_not_an_empty_history(in_project, capsys, monkeypatch, uri, phrase):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    code, out, err = _call(["history"], capsys)
    assert code != 0 and "no alias changes recorded" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and phrase in lines[0] and "Traceback" not in err, err


def test_an_empty_store_has_an_empty_history(in_project, capsys):
    code, out, err = _call(["history"], capsys)
    assert code == 0 and out.strip() == "no alias changes recorded for 'finsent-sentiment'" and err == ""


def test_an_unforeseen_error_is_one_line_and_the_traceback_is_there_on_request(in_project, capsys, monkeypatch):
    import finsent.promotion

    def broken(*_, **__):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(finsent.promotion, "history", broken)
    code, _, err = _call(["history"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "RuntimeError: disk on fire (unexpected: FINSENT_DEBUG=1 shows the traceback" in err
    monkeypatch.setenv("FINSENT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        _call(["history"], capsys)


def test_version_is_one_line(capsys):
    from finsent import __version__
    from finsent.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"finsent {__version__}\n"


def test_every_command_says_what_it_does_and_shows_an_example(capsys):
    import argparse

    from finsent.cli import build_parser, main

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in commands.choices:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0, name
        description = out.split("\n\n")[1]
        assert description[0].isupper() and not description.startswith(("positional", "options")), (name, out)
        assert f"finsent {name}" in out.split("example:\n")[1], (name, out)
