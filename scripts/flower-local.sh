#!/usr/bin/env bash
# Start a Flower SuperLink and K SuperNodes on 127.0.0.1, run one secure_fedrec job
# with `flwr run`, and shut everything down — also when the job fails or on Ctrl-C.
#
#   scripts/flower-local.sh [-k NODES] [-o OUT_DIR] [-c CONFIG.toml] [--sim] [-- extra launcher args]
#
# Examples:
#   scripts/flower-local.sh -k 3 -o runs/flower-local --set aggregation.protocol='"secagg"'
#   scripts/flower-local.sh -k 3 -o runs/drill -- --kill-node 2:0:share_keys --stage-timeout 30
#   scripts/flower-local.sh -k 3 -o runs/paillier --set aggregation.protocol='"paillier"'   # keys dealt first
#   scripts/flower-local.sh --sim -k 20 -o runs/flower-sim
#
# The process management lives in secure_fedrec.engines.flower.launcher (LocalFederation):
# every process runs in its own session, is stopped with SIGTERM then SIGKILL, and the
# ServerApp/ClientApp/Ray processes they started are found and stopped too. This script
# only forwards its arguments; it exits non-zero when the job did not produce metrics.json.
set -euo pipefail

nodes=3
out="runs/flower-local"
mode="deployment"
config=()
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -k|--nodes) nodes="$2"; shift 2 ;;
    -o|--out) out="$2"; shift 2 ;;
    -c|--config) config=(--config "$2"); shift 2 ;;
    --sim) mode="sim"; shift ;;
    --set) extra+=(--set "$2"); shift 2 ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# Offline: no dependency installation at run time, no telemetry, no update checks.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_TELEMETRY_ENABLED=0 \
       FLWR_DISABLE_UPDATE_CHECK=1 RAY_USAGE_STATS_ENABLED=0

exec python -m secure_fedrec.engines.flower.launcher flower \
  --mode "$mode" --nodes "$nodes" --out "$out" "${config[@]}" "${extra[@]}"
