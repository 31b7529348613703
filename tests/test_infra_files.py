"""The deployment files under infra/: checked without Docker, a cluster or the network.

Compose stack (infra/compose): the file parses; every long-running service has a healthcheck and dependents
wait for it; no secret is written in the file (each is a required `${VAR:?...}` from .env); the variables it
uses are exactly those .env.example lists; the services agree with each other (same credentials on both ends,
the worker's URLs name the right service and port); the MLflow start script writes an auth config MLflow
reads and a command line `mlflow server` accepts; the Prefect setting names are ones Prefect reads; and
`docker compose config` accepts it where a compose binary exists (else the Compose-spec JSON schema).

Kubernetes (infra/k8s): every manifest validates against the Kubernetes schemas (kubernetes-validate, offline),
and the work pool's base job template, rendered by Prefect's own templating, is a valid batch/v1 Job that
requests GPUs, tolerates and selects GPU nodes and takes its environment from the Secret.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO / "infra" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S_DIR = REPO / "infra" / "k8s"
JOB_TEMPLATE = K8S_DIR / "base-job-template.json"
MANIFESTS = ["namespace.yaml", "secrets.example.yaml", "worker.yaml"]

# the environment variables finsent itself reads (src/finsent/doctor.py, versioning.py, runtime.py)
FINSENT_ENV = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL",
               "PREFECT_API_AUTH_STRING", "FINSENT_DVC_REMOTE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_ENDPOINT_URL"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|TOKEN|AUTH_STRING")
# compose interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, ... and bare $VAR; $$ is a literal $
BRACED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])([^}]*))?\}")
BARE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}")
URL_CREDENTIALS = re.compile(r"://([^/:@\s]+):([^@\s]+)@")

# importing mlflow's server app warns about a starlette module it uses; not this file's business
pytestmark = pytest.mark.filterwarnings("ignore:starlette.middleware.wsgi is deprecated")


# ---------------------------------------------------------------------------------------------- helpers

def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def strings(node):
    """Every string in a loaded YAML document: mapping keys and values, list items."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def variables_used(document) -> set[str]:
    names = set()
    for text in strings(document):
        names.update(match.group(1) for match in BRACED.finditer(text))
        names.update(BARE.findall(BRACED.sub("", text)))
    return names


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation, for the forms this file uses."""
    def one(match: re.Match) -> str:
        name, operator_part, argument = match.group(1), match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        if operator_part.startswith((":-", "-")) and not value:
            return argument
        if operator_part.startswith((":?", "?")) and not value:
            raise AssertionError(f"{name} required: {argument}")
        return value or ""
    return BRACED.sub(one, text).replace("$$", "$")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def resolved_environment(name: str) -> dict[str, str]:
    """A service's environment as compose would pass it, with .env.example as the .env."""
    values = env_example()
    return {key: interpolate(value, values) for key, value in environment(compose()["services"][name]).items()}


def one_shot_services(services: dict) -> set[str]:
    """Services others wait for to exit 0 (depends_on condition service_completed_successfully)."""
    found = set()
    for service in services.values():
        depends = service.get("depends_on") or {}
        if isinstance(depends, dict):
            found.update(name for name, spec in depends.items()
                         if (spec or {}).get("condition") == "service_completed_successfully")
    return found


def load_mlflow_start():
    spec = importlib.util.spec_from_file_location("mlflow_start", COMPOSE_DIR / "mlflow-start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- compose

def test_compose_file_parses_with_the_expected_services():
    services = compose()["services"]
    assert set(services) == {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker"}
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: no image and no build"


def test_every_long_running_service_has_a_healthcheck_and_one_shots_do_not_restart():
    services = compose()["services"]
    one_shots = one_shot_services(services)
    assert one_shots == {"minio-init"}
    for name, service in services.items():
        if name in one_shots:
            assert str(service.get("restart", "no")) == "no", f"{name}: a one-shot must not restart"
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name}: restart policy"


def test_dependents_wait_for_healthy_or_completed_services():
    services = compose()["services"]
    one_shots = one_shot_services(services)
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_completed_successfully" if dependency in one_shots else "service_healthy"
            assert (spec or {}).get("condition") == expected, f"{name} -> {dependency}: condition"


def test_no_secret_is_written_in_the_compose_file():
    services = compose()["services"]
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                # a required variable, no default: a default would be a secret written here
                assert REQUIRED_REF.fullmatch(value), f"{name}: {key}={value!r} is not a required ${{VAR:?...}}"
    for text in strings(compose()):
        for _user, password in URL_CREDENTIALS.findall(text):
            assert REQUIRED_REF.fullmatch(password), f"password written in a URL: {text!r}"


def test_env_example_lists_exactly_the_variables_the_compose_file_uses():
    used = variables_used(compose())
    listed = set(env_example())
    # COMPOSE_* configure compose itself (project name, ...), they are not referenced in the file
    listed_for_file = {name for name in listed if not name.startswith("COMPOSE_")}
    assert used - listed == set(), f"used in docker-compose.yml, missing from .env.example: {sorted(used - listed)}"
    assert listed_for_file - used == set(), f"in .env.example, unused: {sorted(listed_for_file - used)}"


def test_env_example_has_placeholders_and_comments():
    values = env_example()
    for name, value in values.items():
        if SECRET_NAME.search(name) and not name.endswith("_KEY_ID"):  # an access key id names a user
            assert "change-me" in value, f".env.example {name}: a placeholder (change-me), never a real secret"
    # each group of variables is explained by a comment in its paragraph
    for paragraph in re.split(r"\n\s*\n", ENV_EXAMPLE.read_text()):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        if any(not line.startswith("#") for line in lines):
            assert any(line.startswith("#") for line in lines), f"uncommented variables: {paragraph!r}"


def test_the_services_agree_on_credentials_and_addresses():
    worker = resolved_environment("prefect-worker")
    mlflow = resolved_environment("mlflow")
    prefect = resolved_environment("prefect-server")
    minio_init = resolved_environment("minio-init")
    services = compose()["services"]

    assert FINSENT_ENV <= set(worker), f"worker lacks {sorted(FINSENT_ENV - set(worker))}"
    # the worker logs in with the admin user the MLflow auth app creates, and with the Prefect server's string
    assert worker["MLFLOW_TRACKING_USERNAME"] == mlflow["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert worker["MLFLOW_TRACKING_PASSWORD"] == mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert worker["PREFECT_API_AUTH_STRING"] == prefect["PREFECT_SERVER_API_AUTH_STRING"]
    assert ":" in prefect["PREFECT_SERVER_API_AUTH_STRING"], "Prefect's auth string is user:password"
    # one S3 application user: created by minio-init, used by the MLflow server and the worker's DVC remote
    for env in (mlflow, worker):
        assert env["AWS_ACCESS_KEY_ID"] == minio_init["AWS_ACCESS_KEY_ID"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio_init["AWS_SECRET_ACCESS_KEY"]
    # the worker's URLs name the service and the port it listens on
    for variable, service, port in [("MLFLOW_TRACKING_URI", "mlflow", 5000),
                                    ("PREFECT_API_URL", "prefect-server", 4200),
                                    ("AWS_ENDPOINT_URL", "minio", 9000)]:
        url = urllib.parse.urlsplit(worker[variable])
        assert (url.hostname, url.port) == (service, port), f"{variable}={worker[variable]}"
        assert service in services
    assert worker["PREFECT_API_URL"].endswith("/api")
    assert urllib.parse.urlsplit(mlflow["MLFLOW_S3_ENDPOINT_URL"]).hostname == "minio"
    # the bucket of the DVC remote and of MLflow's artifacts are the ones minio-init creates
    script = services["minio-init"]["command"][0]
    for bucket in (urllib.parse.urlsplit(worker["FINSENT_DVC_REMOTE_URL"]).netloc,
                   urllib.parse.urlsplit(mlflow["MLFLOW_ARTIFACTS_DESTINATION"]).netloc):
        assert f"mc mb --ignore-existing finsent/{bucket}\n" in script, f"bucket {bucket} not created"
    # MLflow answers the Host header the worker sends
    allowed = mlflow["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow:5000" in allowed


def test_the_worker_runs_the_mounted_checkout_on_the_process_pool():
    worker = compose()["services"]["prefect-worker"]
    values = env_example()
    assert worker["working_dir"] == "/project"
    mounts = [interpolate(volume, values) for volume in worker["volumes"]]
    assert "../..:/project" in mounts
    assert (COMPOSE_DIR / "../..").resolve() == REPO
    assert worker["command"][:6] == ["prefect", "worker", "start", "--pool", "finsent-process", "--type"]
    assert worker["build"]["context"] == "../.." and (REPO / worker["build"]["dockerfile"]).is_file()
    assert (REPO / "infra/compose/initdb/create-databases.sql").is_file()
    databases = set(re.findall(r"CREATE DATABASE (\w+);", (COMPOSE_DIR / "initdb/create-databases.sql").read_text()))
    assert {"mlflow", "mlflow_auth", "prefect"} <= databases
    prefect_db = resolved_environment("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("@postgres:5432/prefect")


def test_images_pin_the_versions_finsent_is_tested_with():
    constraints = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    services = compose()["services"]
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{constraints['prefect']}-python3.11"
    mlflow_dockerfile = (COMPOSE_DIR / "mlflow.Dockerfile").read_text()
    assert f"ARG MLFLOW_VERSION={constraints['mlflow']}" in mlflow_dockerfile
    assert services["mlflow"]["image"].endswith(constraints["mlflow"])
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and f"torch=={constraints['torch']}" in dockerfile
    assert "pip install -c constraints.txt" in dockerfile


def test_mlflow_start_writes_an_auth_config_mlflow_reads(tmp_path, monkeypatch):
    """Passwords with URL and INI metacharacters survive: percent-encoded in the URL, '%' doubled for configparser."""
    start = load_mlflow_start()
    env = {"POSTGRES_USER": "fin sent", "POSTGRES_PASSWORD": "p%w@d:/#?x", "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "a%b c", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k"}
    config = tmp_path / "basic_auth.ini"
    config.write_text(start.auth_ini(env))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    from mlflow.server.auth.config import read_auth_config
    from sqlalchemy.engine import make_url

    auth = read_auth_config()
    assert (auth.admin_username, auth.admin_password, auth.default_permission) == ("admin", "a%b c", "READ")
    url = make_url(auth.database_uri)
    assert (url.username, url.password, url.host, url.database) == ("fin sent", "p%w@d:/#?x", "postgres",
                                                                    "mlflow_auth")


def test_mlflow_start_command_is_one_mlflow_server_accepts(monkeypatch):
    from mlflow.cli import server

    start = load_mlflow_start()
    env = {"POSTGRES_USER": "finsent", "POSTGRES_PASSWORD": "secret"}
    argv = start.server_argv(env)
    assert argv[:2] == ["mlflow", "server"]
    assert not any("secret" in arg for arg in argv)  # the password never on the command line (ps shows it)
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", start.database_uri(env, "mlflow"))  # what main() sets
    params = server.make_context("server", argv[2:]).params  # parses the options, starts nothing
    assert params["backend_store_uri"] == "postgresql://finsent:secret@postgres:5432/mlflow"
    assert params["artifacts_destination"] == "s3://mlflow"
    assert params["serve_artifacts"] is True and params["app_name"] == "basic-auth"
    assert (params["host"], params["port"]) == ("0.0.0.0", 5000)


def test_prefect_reads_the_setting_names_the_compose_file_sets(monkeypatch):
    server_env = resolved_environment("prefect-server")
    for name, value in server_env.items():
        monkeypatch.setenv(name, value)
    from prefect.settings.models.root import Settings

    settings = Settings()
    assert settings.server.database.connection_url.get_secret_value() == \
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert settings.server.api.auth_string.get_secret_value() == server_env["PREFECT_SERVER_API_AUTH_STRING"]
    assert settings.server.ui.api_url == server_env["PREFECT_UI_API_URL"]
    assert settings.server.analytics_enabled is False

    for name, value in resolved_environment("prefect-worker").items():
        monkeypatch.setenv(name, value)
    client = Settings()
    assert client.api.url == "http://prefect-server:4200/api"
    assert client.api.auth_string.get_secret_value() == server_env["PREFECT_SERVER_API_AUTH_STRING"]


def _compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1 / standalone), whichever runs here."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _compose_spec_schema() -> dict | None:
    """The Compose-spec JSON schema, where a locally installed package ships one (docker-compose v1's Python package)."""
    try:
        from importlib.resources import files

        return json.loads(files("compose.config").joinpath("compose_spec.json").read_text())
    except Exception:  # noqa: BLE001 - not installed in this interpreter
        pass
    for path in (Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json"),):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _run_compose_config(command: list[str], env_file: Path) -> subprocess.CompletedProcess:
    # a clean environment: only the env file may supply the variables
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_docker_compose_accepts_the_file(tmp_path):
    command = _compose_command()
    if command is not None:
        result = _run_compose_config(command, ENV_EXAMPLE)
        assert result.returncode == 0, result.stderr
        # and a missing secret stops it, naming the variable
        missing = tmp_path / "missing.env"
        missing.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                                     if not line.startswith("POSTGRES_PASSWORD=")))
        result = _run_compose_config(command, missing)
        assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stdout + result.stderr
        return
    schema = _compose_spec_schema()
    if schema is None:
        pytest.skip("no `docker compose` / `docker-compose` binary and no Compose-spec JSON schema available offline "
                    "(e.g. `apt-get install docker-compose` provides both)")
    import jsonschema

    jsonschema.Draft201909Validator(schema).validate(compose())


# ---------------------------------------------------------------------------------------------- kubernetes

def _kubernetes_validate():
    return pytest.importorskip("kubernetes_validate",
                               reason="kubernetes-validate is not installed (it is in the `dev` extra: make install)")


def manifests() -> list[tuple[str, dict]]:
    documents = []
    for name in MANIFESTS:
        for document in yaml.safe_load_all((K8S_DIR / name).read_text()):
            if document:
                documents.append((name, document))
    return documents


def _validate(kubernetes_validate, document: dict) -> None:
    try:
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        raise AssertionError(f"{document['kind']} {document.get('metadata', {}).get('name')}: {path}: "
                             f"{error.message}") from None


def test_every_manifest_parses_and_validates_against_the_kubernetes_schemas():
    kubernetes_validate = _kubernetes_validate()
    documents = manifests()
    assert {document["kind"] for _, document in documents} == {
        "Namespace", "Secret", "ServiceAccount", "Role", "RoleBinding", "Deployment"}
    for _name, document in documents:
        _validate(kubernetes_validate, document)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "finsent"


def test_the_example_secret_holds_finsent_variables_with_placeholders_only():
    (secret,) = [document for _, document in manifests() if document["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "finsent-env"
    assert set(secret["stringData"]) == FINSENT_ENV
    for key, value in secret["stringData"].items():
        if SECRET_NAME.search(key) or key.endswith("USERNAME") or key == "AWS_ACCESS_KEY_ID":
            assert "change-me" in value, f"{key}: placeholder only"


def test_the_worker_can_create_jobs_and_runs_the_kubernetes_worker():
    documents = {document["kind"]: document for _, document in manifests()}
    rules = documents["Role"]["rules"]
    assert any("batch" in rule["apiGroups"] and "jobs" in rule["resources"] and "create" in rule["verbs"]
               for rule in rules)
    assert any("" in rule["apiGroups"] and "pods" in rule["resources"] and "watch" in rule["verbs"] for rule in rules)
    binding = documents["RoleBinding"]
    assert binding["roleRef"]["name"] == documents["Role"]["metadata"]["name"]
    assert binding["subjects"][0]["name"] == documents["ServiceAccount"]["metadata"]["name"]

    pod = documents["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == documents["ServiceAccount"]["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["image"].startswith("prefecthq/prefect:3") and "python3.11" in container["image"]
    assert " ".join(container["args"]).startswith("prefect worker start --pool finsent-k8s --type kubernetes")
    env = {item["name"]: item for item in container["env"]}
    assert "prefect-kubernetes" in env["EXTRA_PIP_PACKAGES"]["value"]
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "finsent-env", "key": name}


def job_template() -> dict:
    return json.loads(JOB_TEMPLATE.read_text())


def test_job_template_variables_are_declared_and_used():
    """What Prefect's server checks on `work-pool create` (undeclared placeholders), and the reverse: a variable
    the job configuration never references would be silently ignored."""
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.templating import find_placeholders
    import jsonschema

    template = job_template()
    validate_base_job_template(template)
    declared = set(template["variables"]["properties"])
    used = {placeholder.name for placeholder in find_placeholders(template["job_configuration"])}
    assert used == declared, f"declared, unused: {sorted(declared - used)}; used, undeclared: {sorted(used - declared)}"
    jsonschema.Draft7Validator.check_schema(template["variables"])
    defaults = {name: spec["default"] for name, spec in template["variables"]["properties"].items() if "default" in spec}
    jsonschema.Draft7Validator(template["variables"]).validate(defaults)
    assert defaults["gpus"] == 1 and defaults["secret_name"] == "finsent-env" and defaults["namespace"] == "finsent"


def render_job(values: dict) -> dict:
    """The Job the Kubernetes worker would submit: Prefect's templating on the pool's defaults + ``values``, then
    what prefect-kubernetes does to the container (env mapping -> list, command string -> args)."""
    from prefect.utilities.templating import apply_values

    template = job_template()
    defaults = {name: spec["default"] for name, spec in template["variables"]["properties"].items() if "default" in spec}
    configuration = apply_values(template["job_configuration"], {**defaults, **values}, remove_notset=True)
    job = configuration["job_manifest"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": key, "value": value} for key, value in container["env"].items()]
    container["args"] = shlex.split(container["args"])
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x7k2p"
    return job


FLOW_RUN_VALUES = {
    "name": "finsent-training-abc12", "command": "prefect flow-run execute",
    "env": {"PREFECT__FLOW_RUN_ID": "6f1c5e0e-0000-4000-8000-000000000001"},
    "labels": {"prefect.io/flow-run-id": "6f1c5e0e-0000-4000-8000-000000000001"},
}


@pytest.mark.parametrize("gpus", [1, 4])
def test_job_template_renders_a_valid_gpu_job(gpus):
    kubernetes_validate = _kubernetes_validate()
    job = render_job({**FLOW_RUN_VALUES, "gpus": gpus, "image": "registry.example.com/finsent:gpu"})
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    _validate(kubernetes_validate, job)

    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert any(toleration["key"] == "nvidia.com/gpu" and toleration["effect"] == "NoSchedule"
               for toleration in pod["tolerations"])
    assert pod["nodeSelector"], "GPU node selector"
    assert {"secretRef": {"name": "finsent-env"}} in container["envFrom"]
    assert container["image"] == "registry.example.com/finsent:gpu"
    assert pod["restartPolicy"] == "Never" and job["metadata"]["namespace"] == "finsent"
    assert any(volume.get("emptyDir", {}).get("medium") == "Memory" for volume in pod["volumes"])  # /dev/shm


def test_readmes_name_the_commands():
    infra = (REPO / "infra" / "README.md").read_text()
    for command in ("cp infra/compose/.env.example infra/compose/.env",
                    "docker compose -f infra/compose/docker-compose.yml --env-file infra/compose/.env up -d",
                    "prefect work-pool create", "prefect deploy", "finsent doctor", "k8s/README.md"):
        assert command in infra, command
    k8s = (K8S_DIR / "README.md").read_text()
    for command in ("kubectl apply -f infra/k8s/namespace.yaml",
                    "prefect work-pool create finsent-k8s --type kubernetes --base-job-template "
                    "infra/k8s/base-job-template.json",
                    "prefect deploy", "train.processes: auto"):
        assert command in k8s, command
