#!/usr/bin/env python3
"""Entry point of the compose stack's MLflow server (the `mlflow` service, built by mlflow.Dockerfile).

Why a script rather than a plain `command:`: the basic-auth app reads its settings (where its user store lives,
the default permission) from an INI file, `MLFLOW_AUTH_CONFIG_PATH`, and INI files cannot read the environment.
So this writes that file at start from the container's environment (secrets come from .env, never from the
image), then replaces itself with

    mlflow server --backend-store-uri postgresql://.../mlflow --artifacts-destination s3://mlflow
                  --serve-artifacts --host 0.0.0.0 --port 5000 --app-name basic-auth

Environment (set by docker-compose.yml):
  POSTGRES_USER, POSTGRES_PASSWORD         owner of the `mlflow` and `mlflow_auth` databases
  POSTGRES_HOST (default postgres)
  MLFLOW_AUTH_ADMIN_USERNAME, _PASSWORD    the admin user the auth app creates on its FIRST start (empty user
                                           store); changing them later changes nothing: use the update-password API
  MLFLOW_FLASK_SERVER_SECRET_KEY           CSRF secret of the auth app (required by it)
  MLFLOW_ARTIFACTS_DESTINATION (default s3://mlflow), MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for boto3
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

AUTH_CONFIG_PATH = Path("/tmp/mlflow-auth/basic_auth.ini")
REQUIRED = ("POSTGRES_USER", "POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY")


def database_uri(env: dict[str, str], database: str) -> str:
    """SQLAlchemy URL of ``database``; user and password percent-encoded, so any character is safe in them."""
    user = urllib.parse.quote(env["POSTGRES_USER"], safe="")
    password = urllib.parse.quote(env["POSTGRES_PASSWORD"], safe="")
    host = env.get("POSTGRES_HOST") or "postgres"
    return f"postgresql://{user}:{password}@{host}:5432/{database}"


def auth_ini(env: dict[str, str]) -> str:
    """The basic-auth app's config file. Values are escaped for configparser, which treats '%' as interpolation."""
    def ini(value: str) -> str:
        return value.replace("%", "%%")

    return "\n".join([
        "[mlflow]",
        # users other than the admin see everything and change nothing unless granted more
        "default_permission = READ",
        f"database_uri = {ini(database_uri(env, 'mlflow_auth'))}",
        # MLflow 3 also reads MLFLOW_AUTH_ADMIN_USERNAME / _PASSWORD from the environment (those win); written here
        # as well so the file alone is a complete config for the admin bootstrap
        f"admin_username = {ini(env['MLFLOW_AUTH_ADMIN_USERNAME'])}",
        f"admin_password = {ini(env['MLFLOW_AUTH_ADMIN_PASSWORD'])}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "",
    ])


def server_argv(env: dict[str, str]) -> list[str]:
    # the backend store URI (it holds the database password) goes in MLFLOW_BACKEND_STORE_URI, which
    # `mlflow server` reads, not on the command line, where `ps` and /proc/*/cmdline would show it
    return ["mlflow", "server",
            # artifacts are proxied: clients upload/download through this server (mlflow-artifacts:/), so only
            # the server holds object-store credentials
            "--artifacts-destination", env.get("MLFLOW_ARTIFACTS_DESTINATION") or "s3://mlflow",
            "--serve-artifacts",
            "--host", "0.0.0.0", "--port", "5000",
            "--app-name", "basic-auth"]


def main() -> None:
    env = dict(os.environ)
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        sys.exit(f"mlflow-start: not set: {', '.join(missing)} (see infra/compose/.env.example)")
    AUTH_CONFIG_PATH.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    AUTH_CONFIG_PATH.touch(mode=0o600)  # it holds the database password: readable by this user only
    AUTH_CONFIG_PATH.write_text(auth_ini(env))
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(AUTH_CONFIG_PATH)
    os.environ["MLFLOW_BACKEND_STORE_URI"] = database_uri(env, "mlflow")
    argv = server_argv(env)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
