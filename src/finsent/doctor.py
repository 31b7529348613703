"""`finsent doctor`: which MLflow, Prefect and DVC remote this shell would use, whether each answers, and what
to do about the ones that do not. Switching to a team's servers is configuration only (MLFLOW_TRACKING_URI,
PREFECT_API_URL, FINSENT_DVC_REMOTE_URL and their credentials), so this is the first thing to run after
setting them. Secrets are never printed: user names are, passwords and keys are not.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from finsent.runtime import redact

TIMEOUT_S = 10
MLFLOW_CREDENTIALS_FIX = "set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD to a user of that server"


@dataclass
class Check:
    name: str
    target: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"  {'OK  ' if self.ok else 'FAIL'}  {self.name:<10} {self.target}: {self.detail}"
        return text + (f"\n        -> {self.fix}" if self.fix else "")


def _get(url: str, auth: str | None = None, method: str = "GET", body: dict | None = None) -> str:
    """``auth``: the "user:password" string sent as HTTP basic auth (as MLflow's and Prefect's clients do)."""
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", f"Basic {base64.b64encode(auth.encode()).decode()}")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return response.read().decode()


def _unreachable(exc: Exception) -> str:
    reason = getattr(exc, "reason", exc)
    return f"not reachable ({reason})"


def check_mlflow() -> Check:
    """Tracking + registry store: reachable, server version, credentials accepted."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    target = redact(uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}" if user else None
    version = ""
    if uri.startswith(("http://", "https://")):
        try:
            version = f"server {_get(uri.rstrip('/') + '/version', auth).strip()}, "
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return Check("MLflow", target, False, f"credentials refused (HTTP {exc.code})",
                             MLFLOW_CREDENTIALS_FIX)
            version = ""  # an older server without /version: the client calls below still tell
        except OSError as exc:
            return Check("MLflow", target, False, _unreachable(exc),
                         "start the tracking server, or fix MLFLOW_TRACKING_URI (unset = the project's SQLite store)")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a doctor answers now, not after minutes of backoff
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TIMEOUT_S))
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    try:
        experiments = client.search_experiments(max_results=100)
        models = client.search_registered_models(max_results=100)
    except MlflowException as exc:
        message = str(exc).splitlines()[0]
        if "401" in message or "403" in message or "nauthorized" in message or "ermission" in message:
            return Check("MLflow", target, False, f"credentials refused ({message[:160]})",
                         MLFLOW_CREDENTIALS_FIX)
        return Check("MLflow", target, False, f"the store answered with an error: {message[:200]}",
                     "check the server's log; a new server may need `mlflow db upgrade <backend store>`")
    problem = _write_probe(client)
    if problem:
        return Check("MLflow", target, False, f"reads work but the registry is not writable ({problem[:200]})",
                     "give this user write access (file permissions of a SQLite store; EDIT/MANAGE on a server)")
    remote = uri.startswith(("http://", "https://"))
    who = (f", auth OK as '{user}'{_role(uri, user, auth)}" if auth else "") if remote else ", a local store"
    return Check("MLflow", target, True, f"{version}tracking and registry answer and take writes{who} "
                                         f"({len(experiments)} experiments, {len(models)} registered models)")


def _write_probe(client) -> str | None:
    """Create and delete a probe registered model -> None, or why the store refused the write."""
    import uuid

    name = f"finsent-doctor-probe-{uuid.uuid4().hex[:8]}"
    try:
        client.create_registered_model(name)
        client.delete_registered_model(name)
    except Exception as exc:  # MLflow's, OSError, SQLAlchemy's OperationalError for a read-only SQLite file
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _role(uri: str, user: str, auth: str) -> str:
    """What the basic-auth app says about ``user``: an admin may do everything a run does; anyone else needs
    EDIT on the experiment and MANAGE on the registered model, which is not checked here."""
    try:
        answer = json.loads(_get(f"{uri.rstrip('/')}/api/2.0/mlflow/users/get?username={urllib.parse.quote(user)}",
                                 auth))
    except (OSError, ValueError):
        return ""
    if answer.get("user", {}).get("is_admin"):
        return " (admin)"
    return (" (not admin: read access checked; a run also needs EDIT on the experiment and MANAGE on the "
            "registered model, not checked)")


def check_prefect() -> Check:
    """Prefect API: reachable, server version, auth string accepted, work pools it knows."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        return Check("Prefect", "ephemeral API", True, "started inside each `finsent run` (PREFECT_API_URL unset); "
                     "schedules and workers need a Prefect server")
    auth = os.environ.get("PREFECT_API_AUTH_STRING") or None  # sent as it is, like Prefect's client does
    target = redact(url)
    try:
        _get(f"{url}/health")
        version = _get(f"{url}/admin/version", auth).strip().strip('"')
        pools = json.loads(_get(f"{url}/work_pools/filter", auth, "POST", {}))
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return Check("Prefect", target, False, f"credentials refused (HTTP {exc.code})",
                         "set PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING (user:password)")
        return Check("Prefect", target, False, f"HTTP {exc.code} from {redact(exc.url)}",
                     "PREFECT_API_URL must end in /api (e.g. http://host:4200/api)")
    except OSError as exc:
        return Check("Prefect", target, False, _unreachable(exc),
                     "start the server (prefect server start), or fix PREFECT_API_URL (unset = ephemeral API)")
    names = ", ".join(sorted(pool["name"] for pool in pools)) or "none yet (prefect work-pool create ...)"
    return Check("Prefect", target, True, f"server {version}{', auth OK' if auth else ''}; work pools: {names}")


def check_dvc_remote(root: Path) -> Check:
    """The default DVC remote: configured, reachable, writable (a probe object written, read back and removed)."""
    from finsent.versioning import open_repo

    target = str(root)  # until the remote is known
    try:
        with open_repo(root) as repo:
            name = repo.config["core"].get("remote")
            if not name:
                return Check("DVC remote", "none", False, "no default remote in .dvc/config",
                             "set FINSENT_DVC_REMOTE_URL or run `dvc remote add -d <name> <url>`")
            odb = repo.cloud.get_remote_odb(None)
            target = f"'{name}' {redact(str(repo.config['remote'][name]['url']))}"
            probe = odb.fs.join(odb.path, f".finsent-doctor-{uuid.uuid4().hex}")
            if odb.fs.protocol == "local":  # a folder remote may not exist yet; a bucket is never created here
                odb.fs.makedirs(odb.path, exist_ok=True)
            odb.fs.pipe_file(probe, b"finsent doctor probe")
            try:
                readable = odb.fs.cat_file(probe) == b"finsent doctor probe"
            finally:
                odb.fs.rm_file(probe)
    except Exception as exc:  # DVC, fsspec and botocore each raise their own types for auth and endpoint errors
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return Check("DVC remote", target, False, f"not usable: {message}",
                     "check the URL, that the bucket exists, and the credentials (AWS_ACCESS_KEY_ID / "
                     "AWS_SECRET_ACCESS_KEY; AWS_ENDPOINT_URL for an S3-compatible store)")
    if not readable:
        return Check("DVC remote", target, False, "a probe object written there read back different bytes",
                     "check the store's consistency settings")
    return Check("DVC remote", target, True, "writable (a probe object written, read back and removed)")


def doctor(root: Path) -> list[Check]:
    return [check_mlflow(), check_prefect(), check_dvc_remote(root)]
