-- Run once by the postgres image, on the first start with an empty data volume
-- (/docker-entrypoint-initdb.d), as POSTGRES_USER, who owns all three databases.
-- To re-run it, remove the volume: `docker compose ... down -v` (this deletes all runs, models and flow history).

-- MLflow tracking store + model registry (`mlflow server --backend-store-uri .../mlflow`)
CREATE DATABASE mlflow;
-- MLflow basic-auth users and permissions (basic_auth.ini `database_uri`); kept apart from the tracking store
-- so each keeps its own schema migrations.
CREATE DATABASE mlflow_auth;
-- Prefect server: flows, deployments, work pools, flow-run history (PREFECT_API_DATABASE_CONNECTION_URL)
CREATE DATABASE prefect;
