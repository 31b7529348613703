"""Great Expectations 1.x: run one suite on a DataFrame, in the project's file-backed GX context.

The context lives in ``<project>/gx/`` (committed: suites, checkpoints, validation definitions;
``gx/uncommitted/`` holds the stored results and is git-ignored by GX itself). Every run writes the
suite from params (thresholds may have changed), stores the result and, with ``build_docs``, rebuilds the
Data Docs site in ``gx/uncommitted/data_docs/local_site``; ``publish_docs`` copies it to the run's docs folder
(a DVC output, logged to the MLflow run), so the committed great_expectations.yml never names a run's folder. Without a project (``finsent
validate`` outside one, unit tests) the same suite runs in an ephemeral context and builds no docs.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from pathlib import Path

import pandas as pd

from finsent.data.docs_offline import make_offline
from finsent.runtime import RUN_NAME_ENV

SITE = "local_site"
KEEP_RESULTS = 5  # stored results per suite; GX keeps every one forever and rebuilds the index from all


def _quiet(context) -> None:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    if (context.variables.progress_bars or {}).get("globally") is not False:  # a tqdm bar per suite otherwise
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()


SITE_DIR = "uncommitted/data_docs/local_site"  # inside gx/: where GX builds the site (git-ignored by GX)


def _docs_site(context) -> None:
    """The site GX builds, always in SITE_DIR: a run's --docs folder never reaches the committed
    great_expectations.yml (``publish_docs`` copies the built site there instead)."""
    site = {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": SITE_DIR},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
    sites = context.list_data_docs_sites()
    if sites.get(SITE) != site:
        (context.update_data_docs_site if SITE in sites else context.add_data_docs_site)(SITE, site)


def publish_docs(project: Path, docs_dir: Path) -> None:
    """Copy the Data Docs site the suites built (``build_docs``) to ``docs_dir``, replacing what was there, with
    its scripts and styles local so that it opens offline."""
    import shutil

    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    shutil.copytree(Path(project) / "gx" / SITE_DIR, docs_dir)
    make_offline(docs_dir)


def _batch_definition(context, name: str):
    try:
        source = context.data_sources.get(name)
    except LookupError:
        source = context.data_sources.add_pandas(name=name)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name=name)
    try:
        return asset.get_batch_definition(name)
    except LookupError:
        return asset.add_batch_definition_whole_dataframe(name)


def _suite(context, name: str, expectations: list):
    """Create or update the suite, keeping the ids of unchanged expectations so the committed JSON only
    changes when a threshold does (GX 1.24's add_or_update compares ids too and would renew them all)."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    def key(expectation) -> str:
        return json.dumps({k: v for k, v in expectation.configuration.to_json_dict().items() if k != "id"},
                          sort_keys=True, default=str)

    suite = gx.ExpectationSuite(name=name, expectations=[copy.copy(e) for e in expectations])
    try:
        ids = {key(e): e.id for e in context.suites.get(name).expectations}
    except DataContextError:
        ids = {}
    for expectation in suite.expectations:
        expectation.id = ids.get(key(expectation))
    return context.suites.add_or_update(suite)


def _prune(context, name: str) -> None:
    store = context.validation_results_store
    old = sorted((k for k in store.list_keys() if k.expectation_suite_identifier.name == name),
                 key=lambda k: k.run_id.run_time)
    for stale in old[: max(0, len(old) - (KEEP_RESULTS - 1))]:
        store.remove_key(stale)


def run_suite(frame: pd.DataFrame, name: str, expectations: list, row_key: str | None = None,
              project: Path | None = None, build_docs: bool = False, data_asset: str | None = None) -> dict:
    """Validate ``frame``; -> the GX result as a JSON-able dict.

    ``row_key``: a column of ``frame`` naming each row; the result then lists every failing row by it.
    ``data_asset``: what the data is (its source files), shown as the Data Docs page's data asset; the run is
    named after the flow run that validates (``FINSENT_RUN_NAME``), else 'finsent validate'."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    # partial_unexpected_count 0: no row's text reaches the Data Docs HTML (GX renders sample values unescaped, so
    # a quarantined '<script>' would run in the reader's browser); the quarantine file holds the rows themselves
    result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [row_key],
                     "partial_unexpected_count": 0} if row_key else {"result_format": "SUMMARY"}
    if project is None:
        context = gx.get_context(mode="ephemeral")
        _quiet(context)
        batch = _batch_definition(context, name).get_batch(batch_parameters={"dataframe": frame})
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        return batch.validate(suite, result_format=result_format).to_json_dict()
    context = gx.get_context(mode="file", project_root_dir=str(project))
    _quiet(context)
    if build_docs:
        _docs_site(context)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=_batch_definition(context, name),
                                suite=_suite(context, name, expectations)))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=name, validation_definitions=[validation], result_format=result_format))
    _prune(context, name)
    # a folder name in the site: 'train · news.csv · lora' -> 'train-news.csv-lora'
    run_id = RunIdentifier(run_name=re.sub(r"[^\w.]+", "-", os.environ.get(RUN_NAME_ENV) or "finsent validate"))
    ((key, result),) = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id).run_results.items()
    if build_docs:
        # an in-memory DataFrame's batch has no asset name for the page to show: name the data, then build
        result.meta["batch_spec"]["data_asset_name"] = data_asset or name
        context.validation_results_store.set(key, result)
        context.build_data_docs(site_names=[SITE])
    return result.to_json_dict()
