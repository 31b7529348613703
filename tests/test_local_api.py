"""`finsent run` starts Prefect's local API in the background while it imports the flow's libraries; the flow
then finds it answering, and where PREFECT_API_URL names a server nothing local is started."""

from __future__ import annotations

import json
import subprocess
import sys

from projects import embedded_env

STARTED_HERE = """
import json, httpx
from finsent.runtime import start_local_prefect_api
from prefect.server.api.server import SubprocessASGIServer
from prefect.client.orchestration import get_client

start_local_prefect_api()()  # start, then wait until it answers
server = SubprocessASGIServer()
health = httpx.get(f"{server.api_url}/health", timeout=10).status_code
with get_client(sync_client=True) as client:  # what the flow's engine asks for: the same server, not a second
    same = str(client.api_url).rstrip("/") == server.api_url
print(json.dumps({"running": server.running, "health": health, "same": same}))
"""

SERVER_NAMED = """
import json
from finsent.runtime import start_local_prefect_api
from prefect.server.api.server import SubprocessASGIServer

start_local_prefect_api()()
print(json.dumps({"running": SubprocessASGIServer().running}))
"""


def _run(code: str, **env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=embedded_env(PREFECT_SERVER_ANALYTICS_ENABLED="false",
                                           PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120", **env))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_local_api_started_in_the_background_is_the_one_the_flow_uses(tmp_path):
    assert _run(STARTED_HERE, PREFECT_HOME=str(tmp_path / "prefect")) == {"running": True, "health": 200,
                                                                          "same": True}


def test_nothing_local_starts_where_a_server_is_named(tmp_path):
    result = _run(SERVER_NAMED, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL="http://127.0.0.1:9/api")
    assert result == {"running": False}
