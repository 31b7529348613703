# MLflow tracking server + model registry for the compose stack (service `mlflow`).
# Build context: infra/compose/ (only mlflow-start.py is copied in).
#
# mlflow is pinned to the version finsent is tested with (constraints.txt: mlflow==3.17.2), so the server and
# the clients (worker, laptops, CI) speak the same REST API and registry semantics. Extra packages:
#   [auth]           the basic-auth app (`--app-name basic-auth`)
#   psycopg2-binary  the PostgreSQL driver for the backend store and the auth user store (same pin as finsent's dev extra)
#   boto3            S3 client for the artifact store (MinIO), used by `--artifacts-destination s3://mlflow`
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==2.9.13" "boto3==1.43.117"

COPY mlflow-start.py /usr/local/bin/mlflow-start
RUN chmod 0755 /usr/local/bin/mlflow-start \
    && useradd --create-home --uid 10001 mlflow
USER mlflow
WORKDIR /home/mlflow

EXPOSE 5000
# /health needs no credentials and is exempt from the server's Host-header check (python: the slim image has no curl)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:5000/health', timeout=4)"
ENTRYPOINT ["mlflow-start"]
