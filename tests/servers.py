"""Real MLflow servers started by tests on loopback, and a fresh PostgreSQL database when reachable."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PG_ADMIN_URL = os.environ.get("FINSENT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 90.0, log: Path | None = None) -> None:
    """Until ``url`` answers 200; the server's output (``log``, else its stderr pipe) in the error otherwise."""
    def output() -> str:
        return log.read_text()[-3000:] if log else (process.stderr.read()[-2000:] if process.stderr else "")

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {output()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"{url} did not answer within {timeout}s: {output()}")


RETRY_STATUSES = (429, 502, 503)  # what Prefect's own client retries; its server answers 503 when SQLite is busy


def call_json(url: str, method: str | None = None, body: dict | None = None, headers: dict | None = None,
              timeout: float = 30, attempts: int = 6):
    """-> the JSON answer of a server's API (``body`` sent as JSON; POST when there is one, else GET, unless
    ``method`` says). An answer the server marks as worth retrying (its database was busy and the request changed
    nothing) is retried with exponential backoff, as Prefect's client and UI do, so a loaded machine does not fail
    a test; any other error is raised at once."""
    request = urllib.request.Request(url, method=method or ("POST" if body is not None else "GET"),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUSES or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)


def start_process(command: list[str], env: dict, health_url: str, log: Path, timeout: float = 120) -> subprocess.Popen:
    """A server process logging to ``log``, returned once ``health_url`` answers 200."""
    with log.open("a") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, text=True, env=env)
    wait_for(health_url, process, timeout, log)
    return process


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path):
    """`mlflow server` on a free loopback port; yields its URL."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"})
    try:
        wait_for(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def postgres_database() -> tuple[str | None, str]:
    """Create a fresh database for this test run -> (url or None, reason when None)."""
    try:
        import psycopg2
    except ImportError:
        return None, "psycopg2 is not installed"
    name = f"finsent_test_{uuid.uuid4().hex[:10]}"
    try:
        connection = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        return None, f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).strip().splitlines()[0]}"
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{name}", ""


def drop_postgres_database(url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[1]
    connection = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    connection.close()
