"""`finsent run` starts Prefect's local API as a process of its own before Prefect is imported, and names it in
PREFECT_API_URL: Prefect's client then uses it and starts no second one. Where a server is configured (the
environment, or a Prefect profile) nothing local is left running. Each case runs in a fresh interpreter with
its own PREFECT_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from projects import embedded_env

STARTED_HERE = """
import json, os, sys, httpx
from finsent.local_api import server_configured, start_local_prefect_api
from prefect.client.orchestration import get_client

start_local_prefect_api()()  # start, then wait until it answers
url = os.environ["PREFECT_API_URL"]
health = httpx.get(f"{url}/health", timeout=10).status_code
with get_client(sync_client=True) as client:  # what the flow's engine asks for: this server, not a second
    same = str(client.api_url).rstrip("/") == url
print(json.dumps({"health": health, "same": same, "user_server": server_configured(),
                  "server_module_here": "prefect.server.api.server" in sys.modules}))
"""

SERVER_ELSEWHERE = """
import json, os, psutil
from finsent.local_api import LOCAL_API_ENV, server_configured, start_local_prefect_api

start_local_prefect_api()()
print(json.dumps({"url": os.environ.get("PREFECT_API_URL"), "local": os.environ.get(LOCAL_API_ENV),
                  "user_server": server_configured(),
                  "children": [p.pid for p in psutil.Process().children() if p.is_running() and
                               p.status() != psutil.STATUS_ZOMBIE]}))
"""

PID_AT_EXIT = """
import json, psutil
from finsent.local_api import start_local_prefect_api

start_local_prefect_api()()
print(json.dumps({"children": [p.pid for p in psutil.Process().children()]}))
"""


def _run(code: str, **env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=embedded_env(PREFECT_SERVER_ANALYTICS_ENABLED="false",
                                           PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120", **env))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_local_api_is_the_one_the_flow_uses_and_its_module_stays_out_of_the_run(tmp_path):
    assert _run(STARTED_HERE, PREFECT_HOME=str(tmp_path / "prefect")) == {
        "health": 200, "same": True, "user_server": False, "server_module_here": False}


def test_nothing_local_starts_where_the_environment_names_a_server(tmp_path):
    result = _run(SERVER_ELSEWHERE, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL="http://127.0.0.1:9/api")
    assert result == {"url": "http://127.0.0.1:9/api", "local": None, "user_server": True, "children": []}


def test_a_server_named_in_a_prefect_profile_wins_and_the_local_one_is_stopped(tmp_path):
    home = tmp_path / "prefect"
    home.mkdir()
    (home / "profiles.toml").write_text('active = "team"\n\n[profiles.team]\n'
                                        'PREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    result = _run(SERVER_ELSEWHERE, PREFECT_HOME=str(home))
    assert result == {"url": None, "local": None, "user_server": False, "children": []}


def test_the_local_api_stops_when_the_run_exits(tmp_path):
    import psutil

    children = _run(PID_AT_EXIT, PREFECT_HOME=str(tmp_path / "prefect"))["children"]
    assert len(children) == 1
    assert not psutil.pid_exists(children[0]) or psutil.Process(children[0]).status() == psutil.STATUS_ZOMBIE


BUILT_OR_COPIED = """
import json
from finsent.local_api import LocalApi, database_template
from prefect.client.orchestration import get_client

api = LocalApi()
api.name_in_environment()
api.wait()
with get_client(sync_client=True) as client:  # the database works: write a flow, read it back
    client.create_flow_from_name("template-check")
    flows = [flow.name for flow in client.read_flows()]
print(json.dumps({"built_here": api.new_database is not None, "template": database_template().is_file(),
                  "flows": flows}))
"""


def test_a_new_project_starts_from_the_machines_migrated_database(tmp_path):
    """The first new database is kept in the cache; the next new project gets a copy instead of migrating."""
    cache = str(tmp_path / "cache")
    first = _run(BUILT_OR_COPIED, PREFECT_HOME=str(tmp_path / "a"), XDG_CACHE_HOME=cache)
    second = _run(BUILT_OR_COPIED, PREFECT_HOME=str(tmp_path / "b"), XDG_CACHE_HOME=cache)
    assert first == {"built_here": True, "template": True, "flows": ["template-check"]}
    assert second == {"built_here": False, "template": True, "flows": ["template-check"]}  # a's flow is not in it
    templates = list((tmp_path / "cache" / "finsent").iterdir())
    assert len(templates) == 1 and templates[0].name.startswith("prefect-")


def test_a_configured_database_is_left_alone(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
    result = _run(BUILT_OR_COPIED, PREFECT_HOME=str(tmp_path / "a"), XDG_CACHE_HOME=str(tmp_path / "cache"),
                  PREFECT_SERVER_DATABASE_CONNECTION_URL=url)
    assert result == {"built_here": False, "template": False, "flows": ["template-check"]}
    assert (tmp_path / "own.db").is_file() and not (tmp_path / "a" / "prefect.db").exists()
