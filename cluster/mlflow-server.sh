#!/usr/bin/env bash
# The team's MLflow tracking server: PostgreSQL backend store, artifacts proxied by the server to S3,
# GCS or a folder (clients need no bucket credentials), HTTP basic auth. Every secret comes from the
# environment; none is written to a file, passed as an argument (visible in `ps`) or logged.
#
#   export MLFLOW_DB_PASSWORD=...  MLFLOW_AUTH_ADMIN_PASSWORD=...
#   MLFLOW_ARTIFACTS=s3://my-bucket/mlflow cluster/mlflow-server.sh      # serves http://127.0.0.1:5000
#
# Clients: MLFLOW_TRACKING_URI=http://HOST:5000 plus MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
# in their environment (gitsweep logs from the Ray driver only, so only the driver needs them).
#
# Environment:
#   MLFLOW_DB_HOST (127.0.0.1)  MLFLOW_DB_PORT (5432)  MLFLOW_DB_NAME (mlflow)  MLFLOW_DB_USER (mlflow)
#   MLFLOW_DB_PASSWORD           required; given to libpq as PGPASSWORD, so the URI carries no password
#   MLFLOW_AUTH_DB_NAME          database of the users and permissions (default: MLFLOW_DB_NAME + _auth)
#   MLFLOW_ARTIFACTS             s3://bucket/prefix, gs://bucket/prefix or a folder (default ~/mlflow-artifacts);
#                                S3 / GCS credentials as usual for boto3 / google-cloud-storage (instance
#                                role, AWS_* or GOOGLE_APPLICATION_CREDENTIALS)
#   MLFLOW_HOST (127.0.0.1)      bind address: keep loopback and use SSH forwarding, or a private IP
#                                behind a firewall; never a public interface without TLS in front
#   MLFLOW_PORT (5000)  MLFLOW_WORKERS (2)
#   MLFLOW_ALLOWED_HOSTS         extra Host headers to accept (default: localhost and private IPs)
#   MLFLOW_AUTH                  basic (default) or none
#   MLFLOW_AUTH_ADMIN_USERNAME   (admin) and MLFLOW_AUTH_ADMIN_PASSWORD: the admin user the auth app
#                                creates on first start (required then; ignored once it exists)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  required with basic auth: the CSRF key (same on every server replica)
#   MLFLOW_AUTH_CACHE_TTL_S      seconds a verified password stays cached per worker (default 60; 0 = off).
#                                A sweep makes many requests; without the cache each one pays the password
#                                hash. A changed or deleted password keeps working on other workers until then.
#   MLFLOW_STATE_DIR             folder for the generated basic_auth.ini (default ~/.config/gitsweep-mlflow)
set -euo pipefail

die() { echo "mlflow-server: $*" >&2; exit 1; }

db_host=${MLFLOW_DB_HOST:-127.0.0.1}
db_port=${MLFLOW_DB_PORT:-5432}
db_name=${MLFLOW_DB_NAME:-mlflow}
db_user=${MLFLOW_DB_USER:-mlflow}
auth_db=${MLFLOW_AUTH_DB_NAME:-${db_name}_auth}
artifacts=${MLFLOW_ARTIFACTS:-$HOME/mlflow-artifacts}
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
workers=${MLFLOW_WORKERS:-2}
auth=${MLFLOW_AUTH:-basic}
state=${MLFLOW_STATE_DIR:-$HOME/.config/gitsweep-mlflow}
mlflow=${MLFLOW_BIN:-mlflow}

[[ -n ${MLFLOW_DB_PASSWORD:-} ]] || die "set MLFLOW_DB_PASSWORD (the password of database role '$db_user')"
export PGPASSWORD=$MLFLOW_DB_PASSWORD  # libpq reads it; the URIs below carry no password
command -v "$mlflow" >/dev/null || die "no '$mlflow' on PATH (activate the gitsweep virtualenv)"

# A folder destination is made absolute; bucket URIs are used as they are.
if [[ $artifacts != *://* ]]; then
    mkdir -p "$artifacts"
    artifacts=$(cd "$artifacts" && pwd)
fi

# +psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, but the dev extras ship psycopg2-binary.
args=(
    server
    --backend-store-uri "postgresql+psycopg2://$db_user@$db_host:$db_port/$db_name"
    --artifacts-destination "$artifacts"
    --serve-artifacts
    --host "$host"
    --port "$port"
    --workers "$workers"
)
[[ -z ${MLFLOW_ALLOWED_HOSTS:-} ]] || args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")

case $auth in
    basic)
        [[ -n ${MLFLOW_FLASK_SERVER_SECRET_KEY:-} ]] \
            || die "set MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF key of the auth app, e.g. \$(openssl rand -hex 32))"
        python -c "import flask_wtf" 2>/dev/null \
            || die "basic auth needs mlflow[auth] (Flask-WTF): pip install 'mlflow[auth]>=3.17,<3.18'"
        mkdir -p "$state"
        chmod 700 "$state"
        # The auth app's settings (no secret inside: the admin password stays in the environment).
        cat > "$state/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://$db_user@$db_host:$db_port/$auth_db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_S:-60}
EOF
        export MLFLOW_AUTH_CONFIG_PATH=$state/basic_auth.ini
        args+=(--app-name basic-auth)
        ;;
    none)
        [[ $host == 127.0.0.1 || $host == localhost ]] \
            || echo "mlflow-server: warning: no authentication on $host; anyone who reaches it can write" >&2
        ;;
    *) die "MLFLOW_AUTH must be 'basic' or 'none', got '$auth'" ;;
esac

echo "mlflow-server: http://$host:$port (backend postgresql://$db_user@$db_host:$db_port/$db_name," \
     "artifacts $artifacts, auth $auth)"
exec "$mlflow" "${args[@]}"
