#!/usr/bin/env bash
# A gitsweep sweep on a SLURM allocation: a Ray head on the first node, Ray workers on the others
# (one `srun ray start --block` step per node), then `gitsweep run CONFIG --address HEAD:PORT` on the
# head, then Ray stopped on every node (also when the sweep fails or the job is cancelled).
#
#   sbatch --nodes=3 cluster/slurm-sweep.sh k49-bg-lt --set dataset.root=$PWD/data/k49
#   squeue --me; tail -f gitsweep-<jobid>.out
#
# Run it from the checkout on the shared filesystem after `make install` (the nodes use its .venv).
# Environment (all optional):
#   GITSWEEP_VENV        virtualenv with gitsweep installed (default: $SLURM_SUBMIT_DIR/.venv)
#   GITSWEEP_HOME        sweep storage, on the shared filesystem (default: $SLURM_SUBMIT_DIR/gitsweep-runs)
#   MLFLOW_TRACKING_URI  e.g. http://mlflow-host:5000 (cluster/mlflow-server.sh); default SQLite in GITSWEEP_HOME
#   RAY_PORT             GCS port of the head (default 6379); RAY_DASHBOARD_PORT (default 8265)
#   RAY_AUTH_TOKEN_PATH  Ray token file, readable only by you (default ~/.ray/auth_token; made if missing)
#   RAY_TMPDIR           node-local Ray temp dir; keep it short, Unix socket paths are limited to 107 bytes
#   RAY_START_TIMEOUT    seconds to wait for all nodes to join (default 300)
#
#SBATCH --job-name=gitsweep
#SBATCH --nodes=2
#SBATCH --exclusive
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --output=gitsweep-%j.out
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch cluster/slurm-sweep.sh CONFIG [gitsweep run options, e.g. --set key=value]" >&2
    exit 2
fi
config=$1
shift

cd "${SLURM_SUBMIT_DIR:-$PWD}"
# shellcheck disable=SC1091
source "${GITSWEEP_VENV:-$PWD/.venv}/bin/activate"
export GITSWEEP_HOME=${GITSWEEP_HOME:-$PWD/gitsweep-runs}
port=${RAY_PORT:-6379}
dashboard_port=${RAY_DASHBOARD_PORT:-8265}
temp_dir=${RAY_TMPDIR:-/tmp/ray-${SLURM_JOB_ID:-$$}}
cpus=${SLURM_CPUS_PER_TASK:-1}
gpus=${SLURM_GPUS_PER_TASK:-0}
timeout=${RAY_START_TIMEOUT:-300}

# Token authentication: every Ray process and client of this job presents the same secret, read from
# a file on the shared filesystem (srun passes the environment on to the steps).
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
if [[ ! -s $RAY_AUTH_TOKEN_PATH ]]; then
    mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
    (umask 077 && python -c "import secrets; print(secrets.token_hex(32))" > "$RAY_AUTH_TOKEN_PATH")
fi

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
head_ip=${RAY_HEAD_IP:-$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')}
address="$head_ip:$port"
echo "gitsweep: Ray head on $head_node ($address), ${#nodes[@]} node(s), $cpus CPU(s) and $gpus GPU(s) each"

step_pids=()
stop_ray() {
    # SIGTERM to each `srun ray start --block` step: that node's Ray stops its own processes.
    local pid
    for pid in "${step_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${step_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    echo "gitsweep: Ray stopped on ${#step_pids[@]} node(s)"
}
trap stop_ray EXIT
trap 'exit 143' TERM INT  # scancel / Ctrl-C: exit through the EXIT trap

# Blocks until `want` nodes are alive in the cluster, or fails after $timeout seconds.
wait_for_nodes() {
    local want=$1 deadline=$((SECONDS + timeout)) have=0
    while ((SECONDS < deadline)); do
        have=$(python - "$address" <<'EOF' 2>/dev/null || echo 0
import sys

import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
EOF
        )
        if ((have >= want)); then
            return 0
        fi
        sleep 2
    done
    echo "gitsweep: only $have of $want Ray node(s) up after ${timeout}s" >&2
    return 1
}

srun --nodes=1 --ntasks=1 --cpus-per-task="$cpus" -w "$head_node" \
    ray start --head --node-ip-address="$head_ip" --port="$port" \
    --num-cpus="$cpus" --num-gpus="$gpus" --temp-dir="$temp_dir" \
    --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" --disable-usage-stats --block &
step_pids+=($!)
wait_for_nodes 1

for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 --cpus-per-task="$cpus" -w "$node" \
        ray start --address="$address" --num-cpus="$cpus" --num-gpus="$gpus" \
        --temp-dir="$temp_dir" --disable-usage-stats --block &
    step_pids+=($!)
done
wait_for_nodes "${#nodes[@]}"

status=0
gitsweep run "$config" --address "$address" "$@" || status=$?
echo "gitsweep: sweep exited with status $status"
exit "$status"
