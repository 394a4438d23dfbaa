#!/usr/bin/env bash
# The laptop stack behind `make run`: a local Kafka-protocol broker, a Ray head on loopback, the surge
# app via `serve run deployments/serve_config.yaml`, and the ingestion consumer feeding the index.
# `scripts/run_local.sh stop` (or Ctrl-C / SIGTERM) stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Ray 2.60 turns token auth on; its CLIs (serve run/status) must be told to use the token too.
export RAY_AUTH_MODE=token
RUN_DIR="${SURGE_RUN_DIR:-$PWD/.run}"
RAY_PORT="${SURGE_RAY_PORT:-6380}"
KAFKA_PORT="${SURGE_KAFKA_PORT:-9092}"
BOOTSTRAP="127.0.0.1:${KAFKA_PORT}"
mkdir -p "$RUN_DIR"

stop_all() {
  trap - EXIT INT TERM
  echo "surge: stopping"
  if [[ -f "$RUN_DIR/ingest.pid" ]]; then kill -TERM "$(cat "$RUN_DIR/ingest.pid")" 2>/dev/null || true; rm -f "$RUN_DIR/ingest.pid"; fi
  # Stop only the Ray instance this script started (every one of its processes names its session dir),
  # not other Ray clusters on the machine as `ray stop` would.
  if [[ -s "$RUN_DIR/ray-session" ]]; then
    local session; session="$(cat "$RUN_DIR/ray-session")"
    pkill -TERM -f "$session" 2>/dev/null || true
    for _ in $(seq 1 20); do pgrep -f "$session" >/dev/null || break; sleep 0.5; done
    pkill -KILL -f "$session" 2>/dev/null || true
    rm -f "$RUN_DIR/ray-session"
    # `ray.init(address="auto")` (and `serve run`) would keep trying to join the stopped cluster.
    if grep -qs ":${RAY_PORT}\$" /tmp/ray/ray_current_cluster; then rm -f /tmp/ray/ray_current_cluster; fi
  fi
  surge broker stop --data-dir "$RUN_DIR/broker" >/dev/null 2>&1 || true
}

if [[ "${1:-}" == "stop" ]]; then stop_all; exit 0; fi

# A random API key per checkout, kept in .run/ (never committed), unless the caller brings their own.
if [[ -z "${SURGE_API_KEYS:-}" ]]; then
  [[ -s "$RUN_DIR/api-key" ]] || python -c 'import secrets; print("sk-surge-" + secrets.token_urlsafe(24))' >"$RUN_DIR/api-key"
  SURGE_API_KEYS="$(cat "$RUN_DIR/api-key")"
fi
export SURGE_API_KEYS SURGE_API_KEY="${SURGE_API_KEYS%%,*}"

trap stop_all EXIT INT TERM
surge broker start --data-dir "$RUN_DIR/broker" --port "$KAFKA_PORT"
surge topics create --bootstrap-servers "$BOOTSTRAP"
ray start --head --node-ip-address=127.0.0.1 --port="$RAY_PORT" --num-cpus=4 \
  --include-dashboard=false --disable-usage-stats >"$RUN_DIR/ray-start.log" 2>&1
ps -eo args | grep "gcs_server" | grep -- "--gcs_server_port=${RAY_PORT}" | grep -o "session_[0-9_-]*" | head -1 >"$RUN_DIR/ray-session"
export RAY_ADDRESS="127.0.0.1:${RAY_PORT}"

serve run --non-blocking deployments/serve_config.yaml
surge ingest --bootstrap-servers "$BOOTSTRAP" --sink-url http://127.0.0.1:8000 --metrics-port 9464 --group-instance-id local-ingest \
  >"$RUN_DIR/ingest.log" 2>&1 &
echo $! >"$RUN_DIR/ingest.pid"

cat <<BANNER

  surge is serving on http://127.0.0.1:8000 (OpenAI-compatible; CPU, embedded index, local broker $BOOTSTRAP)
  API key: $SURGE_API_KEY        (kept in $RUN_DIR/api-key; set SURGE_API_KEYS to use your own)

    curl -s http://127.0.0.1:8000/v1/models -H "Authorization: Bearer $SURGE_API_KEY"
    surge produce documents ./docs/ --bootstrap-servers $BOOTSTRAP     # ingested into the index

  Embedder and LLM start at zero replicas: the first request wakes them (about a minute for the LLM on CPU).
  Ctrl-C stops everything.
BANNER
# Stay in the foreground until Ctrl-C or SIGTERM, then stop everything this script started.
while true; do sleep 30 & wait $!; done   # `wait` lets the stop trap run at once
