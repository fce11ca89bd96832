#!/usr/bin/env bash
# A private PostgreSQL for the MLflow server (cluster/mlflow-server.sh): installed from the OS packages,
# one cluster in a folder of your choice, listening on 127.0.0.1 only, with password authentication.
# Used on a head node without a managed database, by CI and by tests/cluster.
#
#   cluster/postgres-local.sh install             apt-get install postgresql (if initdb is missing; root/sudo)
#   cluster/postgres-local.sh start DIR [PORT]    initdb DIR (first time), start on 127.0.0.1:PORT (5432),
#                                                 create the role and the databases; prints the backend URI
#   cluster/postgres-local.sh stop DIR            fast shutdown
#
# Environment: MLFLOW_DB_PASSWORD (required for start; never written to disk or passed as an argument),
# MLFLOW_DB_USER (default mlflow), MLFLOW_DB_NAME (default mlflow; the auth app gets NAME_auth).
# As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail

die() { echo "postgres-local: $*" >&2; exit 1; }

pg_bin() {  # the folder holding initdb / pg_ctl (Debian keeps them off PATH)
    local found
    if found=$(command -v initdb 2>/dev/null); then
        dirname "$(readlink -f "$found")"
        return
    fi
    found=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [[ -n $found ]] || return 1
    echo "$found"
}

as_owner() {  # run a command as the user owning the cluster
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cmd_install() {
    if pg_bin >/dev/null; then
        echo "postgres-local: PostgreSQL already installed in $(pg_bin)"
        return
    fi
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    pg_bin >/dev/null || die "apt-get finished but initdb is still missing"
    echo "postgres-local: installed PostgreSQL in $(pg_bin)"
}

cmd_start() {
    local dir=${1:?usage: postgres-local.sh start DIR [PORT]} port=${2:-5432}
    local user=${MLFLOW_DB_USER:-mlflow} db=${MLFLOW_DB_NAME:-mlflow}
    : "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (the password of the MLflow database role)}"
    [[ $user =~ ^[a-z_][a-z0-9_]*$ ]] || die "MLFLOW_DB_USER must be a plain lower-case identifier"
    [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || die "MLFLOW_DB_NAME must be a plain lower-case identifier"
    local bin
    bin=$(pg_bin) || die "PostgreSQL is not installed (run: $0 install)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [[ $(id -u) -ne 0 ]] || chown postgres: "$dir"
    chmod 700 "$dir"
    as_owner test -w "$dir" || die "$dir is not reachable by the postgres user (make its parents world-searchable)"
    if [[ ! -f $dir/PG_VERSION ]]; then
        # Local (socket) connections: the OS user only; TCP: passwords (scram-sha-256).
        as_owner "$bin/initdb" -D "$dir" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            --encoding=UTF8 --no-instructions >/dev/null
    fi
    # Sockets live in the data folder (short, private); TCP only on loopback. Already running: keep it.
    if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir'" start >/dev/null \
            || { tail -n 20 "$dir/server.log" >&2; die "server did not start (log: $dir/server.log)"; }
    fi
    # The password reaches psql on stdin (printf is a builtin), so it never shows in `ps`.
    local pw=${MLFLOW_DB_PASSWORD//\'/\'\'}
    printf "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN; END IF;
END \$\$;
ALTER ROLE %s PASSWORD '%s';
SELECT 'CREATE DATABASE %s OWNER %s' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '%s')\\gexec
SELECT 'CREATE DATABASE %s_auth OWNER %s' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '%s_auth')\\gexec
" "$user" "$user" "$user" "$pw" "$db" "$user" "$db" "$db" "$user" "$db" \
        | as_owner "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres >/dev/null
    echo "postgresql://$user@127.0.0.1:$port/$db"
}

cmd_stop() {
    local dir=${1:?usage: postgres-local.sh stop DIR}
    local bin
    bin=$(pg_bin) || die "PostgreSQL is not installed"
    as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
}

case ${1:-} in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
