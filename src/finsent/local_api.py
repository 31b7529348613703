"""Prefect's local API for a run when no Prefect server is configured: the same server process Prefect's own
ephemeral mode starts (uvicorn serving ``prefect.server.api.server:create_app``, UI off, ephemeral services),
started by finsent before Prefect is imported.

Prefect's ``SubprocessASGIServer`` would do the same, but it lives in the server's own module, which takes
2.7 s to import into the run's process before the server's process can even start (2 cores); started here,
the server comes up while the run imports Prefect, the flow and MLflow. The run then names it in
PREFECT_API_URL, so Prefect's client uses it and starts none of its own; ``LOCAL_API_ENV`` holds the same URL,
so finsent can tell it from a server the user configured (``server_configured``).

A new project's server first builds its SQLite database by running every one of Prefect's migrations: about
6 s on 2 cores, the slowest part of a first run's start. So the first such database built on a machine is
copied (SQLite's backup, once the server answers) into the user's cache, one file per Prefect version, and a
later new project starts from a copy of it; Prefect's own migrations still run on it at start and find nothing
to do. Only for Prefect's default database file (no ``PREFECT_*DATABASE*`` setting).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterable

from finsent.errors import FinsentError

LOCAL_API_ENV = "FINSENT_LOCAL_PREFECT_API"
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # Prefect's own setting for its start
# What Prefect's ephemeral start sets for its server process (prefect.server.api.server, pinned Prefect)
EPHEMERAL_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def server_configured() -> bool:
    """A Prefect server named by the user (PREFECT_API_URL), not the local API a run started for itself."""
    url = os.environ.get("PREFECT_API_URL")
    return bool(url) and url != os.environ.get(LOCAL_API_ENV)


PORTS = range(8000, 9000)  # as Prefect's own start: outside the range the OS hands out to outgoing connections
ADDRESS_IN_USE = 3  # uvicorn's exit code when another process took the port first


def _free_port() -> int:
    for port in random.sample(PORTS, 20):
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
            with contextlib.suppress(OSError):
                probe.bind(("127.0.0.1", port))
                return port
    raise FinsentError(f"no free port for Prefect's local API in {PORTS.start}-{PORTS.stop - 1}; set "
                       f"PREFECT_API_URL to a running Prefect server")


def _default_database() -> Path | None:
    """The SQLite file the server will use when the user configured no database: Prefect's default."""
    if any(name.startswith("PREFECT_") and "DATABASE" in name for name in os.environ):
        return None
    home = os.environ.get("PREFECT_HOME")
    return Path(home) / "prefect.db" if home else None


def database_template() -> Path:
    """Where this machine keeps an empty, migrated database of the installed Prefect version."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "finsent" / f"prefect-{version('prefect')}.db"


def _is_migrated(database: Path) -> bool:
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro",
                                                                                uri=True)) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    return False


class LocalApi:
    """The server's process; stopped when this process exits."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.api_url = ""
        self.new_database = self._seed_database()
        self._launch()
        atexit.register(self.stop)

    @staticmethod
    def _seed_database() -> Path | None:
        """Copy the machine's template into a project that has no database yet; -> the database file when the
        server will build it from scratch (no template yet), so ``wait`` can keep it as the template."""
        database = _default_database()
        if database is None or database.exists():
            return None
        template = database_template()
        if template.is_file() and _is_migrated(template):
            with contextlib.suppress(OSError):
                database.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, database)
                return None
        return database

    def _keep_as_template(self) -> None:
        """A consistent copy of the database the server just built (migrated, nothing run yet); a failed copy
        only means the next new project migrates again."""
        template = database_template()
        partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
        try:
            template.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(self.new_database)) as source, \
                    contextlib.closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")  # one file (Prefect's server sets WAL on its copies)
            os.replace(partial, template)  # whole or not at all, whoever else writes it
        except (OSError, sqlite3.Error):
            partial.unlink(missing_ok=True)

    def _launch(self) -> None:
        import importlib.util

        port = _free_port()
        prefect_dir = os.path.dirname(os.path.dirname(importlib.util.find_spec("prefect").origin))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", prefect_dir, "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **EPHEMERAL_SERVER_ENV}, stdin=subprocess.DEVNULL)
        self.api_url = f"http://127.0.0.1:{port}/api"

    def name_in_environment(self) -> None:
        """PREFECT_API_URL (and LOCAL_API_ENV) name this server, for Prefect in this process and its children."""
        from prefect.context import refresh_global_settings_context

        os.environ["PREFECT_API_URL"] = os.environ[LOCAL_API_ENV] = self.api_url
        refresh_global_settings_context()  # Prefect read its settings at import

    def wait(self, meanwhile: Iterable[Callable[[], object]] = ()) -> None:
        """Return once the API answers; FinsentError if its process ends or it does not answer in time.
        Until it answers, runs the ``meanwhile`` calls one at a time (what the run needs later anyway; a
        call that fails is left for the run to meet again), then only waits."""
        timeout = float(os.environ.get(STARTUP_TIMEOUT_ENV) or 120)
        deadline = time.monotonic() + timeout
        pending = iter(meanwhile)
        while time.monotonic() < deadline:
            if self.process.poll() == ADDRESS_IN_USE:  # taken since it was probed: another port
                self._launch()
                self.name_in_environment()
            elif self.process.poll() is not None:
                raise FinsentError(f"Prefect's local API stopped at start-up (exit code {self.process.returncode}; "
                                   f"its messages are above); set PREFECT_API_URL to a running Prefect server "
                                   f"instead, or run `finsent doctor`")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as response:
                    if response.status == 200:
                        if self.new_database is not None and _is_migrated(self.new_database):
                            self._keep_as_template()
                        return
            call = next(pending, None)
            if call is None:
                time.sleep(0.1)
            else:
                with contextlib.suppress(Exception):
                    call()
        raise FinsentError(f"Prefect's local API did not answer within {timeout:.0f} s (a busy machine? raise "
                           f"{STARTUP_TIMEOUT_ENV}, or set PREFECT_API_URL to a running Prefect server)")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _no_wait(meanwhile: Iterable[Callable[[], object]] = ()) -> None:
    """A configured server: nothing to wait for."""


def start_local_prefect_api() -> Callable[..., None]:
    """Where no Prefect server is configured, start the local API and name it in PREFECT_API_URL; call before
    Prefect is imported. -> a function that waits until it answers (``LocalApi.wait``; call it before the
    flow's first call)."""
    if os.environ.get("PREFECT_API_URL"):
        return _no_wait
    api = LocalApi()  # before Prefect's import, which is most of the time until the flow runs
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:  # a server named in a Prefect profile or prefect.toml: that one
        api.stop()
        return _no_wait
    api.name_in_environment()
    return api.wait
