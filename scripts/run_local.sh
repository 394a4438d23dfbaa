#!/usr/bin/env bash
# The laptop stack behind `make run`: a local Kafka-protocol broker, a Ray head on loopback, the surge app via
# `serve run deployments/serve_config.yaml`, and the pipelines that read the topics: the ingestion consumer
# (documents -> index), the drift monitor (inference-log -> drift metrics and alerts) and the feature job
# (events -> feature stores, run whenever `events` has lag). Everything it writes stays in the checkout
# (.run/ for state and logs, .cache/surge/ for models, the index and the feature stores).
#
#   scripts/run_local.sh          start, wait until /readyz answers, print the banner, stay in the foreground
#   scripts/run_local.sh stop     stop every process the stack started (from any terminal)
#
# Ctrl-C, SIGTERM or `make stop` end every process it started (Ray's agents included) and free its ports.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONUNBUFFERED=1
export SURGE_CACHE_DIR="${SURGE_CACHE_DIR:-$PWD/.cache/surge}"
RUN_DIR="${SURGE_RUN_DIR:-$PWD/.run}"
export SURGE_RUN_DIR="$RUN_DIR"
RAY_PORT="${SURGE_RAY_PORT:-6380}"
RAY_METRICS_PORT="${SURGE_RAY_METRICS_PORT:-8080}"
KAFKA_PORT="${SURGE_KAFKA_PORT:-9092}"
APP_PORT=8000   # the serve config's http_options.port
INGEST_METRICS_PORT="${SURGE_INGEST_METRICS_PORT:-9464}"
DRIFT_METRICS_PORT="${SURGE_DRIFT_METRICS_PORT:-9465}"
FEATURE_JOB_INTERVAL_S="${SURGE_FEATURE_JOB_INTERVAL_S:-60}"
READY_TIMEOUT_S="${SURGE_READY_TIMEOUT_S:-600}"
BOOTSTRAP="127.0.0.1:${KAFKA_PORT}"
BASE_URL="http://127.0.0.1:${APP_PORT}"
COMPONENTS=(ingest drift feature-job)
mkdir -p "$RUN_DIR"

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# Every process of the Ray instance this script started: its processes share the session id of the `setsid`
# that started `ray start`, and their command lines name the session directory. Ray's agents rename their
# process title (ray::DashboardAgent), so the session id is what finds them all.
ray_pids() {
  local sid; sid="$(cat "$RUN_DIR/ray.sid" 2>/dev/null || true)"
  { [[ -n "$sid" ]] && ps -eo pid=,sid= | awk -v s="$sid" '$2 == s {print $1}'
    [[ -s "$RUN_DIR/ray-session" ]] && pgrep -f "$(cat "$RUN_DIR/ray-session")"
  } 2>/dev/null | sort -u || true
}

stop_ray() {
  local pids; pids="$(ray_pids)"
  [[ -n "$pids" ]] && kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 40); do
    pids="$(ray_pids)"; [[ -z "$pids" ]] && break
    sleep 0.25
  done
  [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
  rm -f "$RUN_DIR/ray.sid" "$RUN_DIR/ray-session"
  # `ray.init(address="auto")` (and `serve run`) would keep trying to join the stopped cluster.
  if grep -qs ":${RAY_PORT}\$" /tmp/ray/ray_current_cluster; then rm -f /tmp/ray/ray_current_cluster; fi
}

stop_components() {
  local name pid
  for name in "${COMPONENTS[@]}" serve-run; do
    pid="$(cat "$RUN_DIR/$name.pid" 2>/dev/null || true)"
    if alive "$pid"; then kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for name in "${COMPONENTS[@]}" serve-run; do
    pid="$(cat "$RUN_DIR/$name.pid" 2>/dev/null || true)"
    for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
    if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$RUN_DIR/$name.pid"
  done
}

stop_all() {
  trap - EXIT INT TERM
  echo "surge: stopping"
  stop_components
  stop_ray
  surge broker stop --data-dir "$RUN_DIR/broker" >/dev/null 2>&1 || true
  rm -f "$RUN_DIR/run.pid"
  echo "surge: stopped"
}

if [[ "${1:-}" == "stop" ]]; then
  # The foreground `make run` does the cleanup in its trap, then its terminal returns; without one, do it here.
  pid="$(cat "$RUN_DIR/run.pid" 2>/dev/null || true)"
  if alive "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 1 120); do alive "$pid" || exit 0; sleep 0.5; done
    echo "surge: the running stack (pid $pid) did not stop within 60 s; stopping its parts directly" >&2
  fi
  stop_all >/dev/null
  exit 0
fi

if alive "$(cat "$RUN_DIR/run.pid" 2>/dev/null || true)"; then
  echo "surge: already running (pid $(cat "$RUN_DIR/run.pid")); \`make stop\` first" >&2
  exit 1
fi
for port in "$APP_PORT" "$KAFKA_PORT" "$RAY_PORT" "$RAY_METRICS_PORT" "$INGEST_METRICS_PORT" "$DRIFT_METRICS_PORT"; do
  if python -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)"; then
    echo "surge: port $port is in use; stop what holds it (\`ss -ltnp 'sport = :$port'\`) or \`make stop\`" >&2
    exit 1
  fi
done

# A random API key per checkout, kept in .run/ (never committed), unless the caller brings their own.
if [[ -z "${SURGE_API_KEYS:-}" ]]; then
  [[ -s "$RUN_DIR/api-key" ]] || python -c 'import secrets; print("sk-surge-" + secrets.token_urlsafe(24))' >"$RUN_DIR/api-key"
  SURGE_API_KEYS="$(cat "$RUN_DIR/api-key")"
fi
export SURGE_API_KEYS SURGE_API_KEY="${SURGE_API_KEYS%%,*}"
# Ray's auth token, per checkout (surge_core/local_ray.py): nothing is read from or written to ~/.ray.
RAY_AUTH_TOKEN_PATH="$(python -m surge_core.local_ray token --run-dir "$RUN_DIR")"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH

echo $$ >"$RUN_DIR/run.pid"
# A failed start exits non-zero after cleaning up (EXIT); Ctrl-C and `make stop` (TERM) end it with 0.
trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM
step() { printf '  [%5.1fs] %s\n' "$(($(date +%s%N) / 1000000 - START_MS))e-3" "$*"; }
START_MS=$(($(date +%s%N) / 1000000))
echo "surge: starting (state and logs in $RUN_DIR)"

surge broker start --data-dir "$RUN_DIR/broker" --port "$KAFKA_PORT" >/dev/null
step "broker on $BOOTSTRAP"
surge topics create --bootstrap-servers "$BOOTSTRAP" >/dev/null
step "topics created"

setsid ray start --head --node-ip-address=127.0.0.1 --port="$RAY_PORT" --num-cpus=6 \
  --metrics-export-port="$RAY_METRICS_PORT" --include-dashboard=false --disable-usage-stats \
  >"$RUN_DIR/ray-start.log" 2>&1 || { cat "$RUN_DIR/ray-start.log" >&2; exit 1; }
gcs_pid="$(pgrep -f -- "gcs_server.*--gcs_server_port=${RAY_PORT}" | head -1)"
ps -o sid= -p "$gcs_pid" | tr -d ' ' >"$RUN_DIR/ray.sid"
ps -o args= -p "$gcs_pid" | grep -o "session_[0-9_-]*" | head -1 >"$RUN_DIR/ray-session"
export RAY_ADDRESS="127.0.0.1:${RAY_PORT}"
step "Ray head on $RAY_ADDRESS"

# `serve run --non-blocking` returns once the app is deployed; its own process group, so stop can end it.
setsid serve run --non-blocking deployments/serve_config.yaml >"$RUN_DIR/serve.log" 2>&1 &
echo $! >"$RUN_DIR/serve-run.pid"
serve_pid=$!
last_report=0
while true; do
  ready_json="$(curl -s --max-time 3 "$BASE_URL/readyz" 2>/dev/null || true)"
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$BASE_URL/readyz" 2>/dev/null || true)"
  [[ "$code" == 200 ]] && break
  if [[ "$ready_json" == *DEPLOY_FAILED* || "$ready_json" == *UNHEALTHY* ]]; then
    echo "surge: the app failed to deploy: $ready_json" >&2
    exit 1
  fi
  if [[ -n "$serve_pid" ]] && ! alive "$serve_pid"; then
    if ! wait "$serve_pid"; then
      echo "surge: \`serve run\` failed; the end of $RUN_DIR/serve.log:" >&2
      tail -n 25 "$RUN_DIR/serve.log" >&2
      exit 1
    fi
    serve_pid=""   # deployed; readiness follows
  fi
  now=$(date +%s)
  if ((now - START_MS / 1000 > READY_TIMEOUT_S)); then
    echo "surge: the app was not ready within ${READY_TIMEOUT_S} s; see $RUN_DIR/serve.log and \`serve status\`" >&2
    exit 1
  fi
  if ((now - last_report >= 5)); then
    last_report=$now
    if [[ "$ready_json" == "{"* ]]; then
      step "app starting: $(python -c 'import json,sys; d=json.loads(sys.argv[1]); print(", ".join(f"{n} {v[\"status\"]}" for n, v in d.get("deployments", {}).items()) or d.get("status"))' "$ready_json" 2>/dev/null)"
    elif [[ -n "$ready_json" ]]; then
      step "HTTP proxy up; deploying the app (Gateway, Embedder, Retriever, LLM)"
    else
      step "building the app (imports, Serve controller and proxy)"
    fi
  fi
  sleep 1
done
[[ -n "$serve_pid" ]] && { wait "$serve_pid" 2>/dev/null || true; }
rm -f "$RUN_DIR/serve-run.pid"
step "app ready on $BASE_URL"

# The pipelines: each its own process group (so stop ends its children too), logs in $RUN_DIR.
cat >"$RUN_DIR/drift-monitor.json" <<JSON
{"kafka": {"bootstrap_servers": "$BOOTSTRAP"}, "group_instance_id": "local-drift",
 "metrics_port": $DRIFT_METRICS_PORT, "state_path": "$RUN_DIR/drift-state.json"}
JSON
cat >"$RUN_DIR/feature-job.json" <<JSON
{"kafka": {"bootstrap_servers": "$BOOTSTRAP"}, "offline_path": "$SURGE_CACHE_DIR/features/offline",
 "online": {"backend": "sqlite", "path": "$SURGE_CACHE_DIR/features.sqlite"},
 "embed_actor_cpus": 0.5, "aggregate_task_cpus": 0.25}
JSON
setsid surge ingest --bootstrap-servers "$BOOTSTRAP" --sink-url "$BASE_URL" --metrics-port "$INGEST_METRICS_PORT" \
  --group-instance-id local-ingest >"$RUN_DIR/ingest.log" 2>&1 &
echo $! >"$RUN_DIR/ingest.pid"
setsid surge drift-monitor run --settings "$RUN_DIR/drift-monitor.json" >"$RUN_DIR/drift.log" 2>&1 &
echo $! >"$RUN_DIR/drift.pid"
# The feature job is a batch job: run it whenever `events` has lag (--min-lag 1 exits at once otherwise,
# without starting a Ray driver), checking every SURGE_FEATURE_JOB_INTERVAL_S seconds.
setsid bash -c "while true; do surge feature-job run --settings '$RUN_DIR/feature-job.json' --min-lag 1 || true; sleep $FEATURE_JOB_INTERVAL_S; done" \
  >"$RUN_DIR/feature-job.log" 2>&1 &
echo $! >"$RUN_DIR/feature-job.pid"
step "ingestion consumer, drift monitor and feature job started"

cat <<BANNER

  surge is serving on $BASE_URL (OpenAI-compatible; CPU, embedded index, local broker $BOOTSTRAP)
  API key: $SURGE_API_KEY        (kept in $RUN_DIR/api-key; set SURGE_API_KEYS to use your own)

    curl -s $BASE_URL/v1/models -H "Authorization: Bearer $SURGE_API_KEY"
    surge produce documents ./docs/ --bootstrap-servers $BOOTSTRAP     # ingested into the index

  The Embedder and the LLM start at zero replicas: the first request wakes them. The first chat waits for
  the LLM to load (about 35-60 s on 2 CPU cores); later ones answer in about a second.

  component          log                            metrics
  app (Ray Serve)    $RUN_DIR/serve.log, /tmp/ray/session_latest/logs/serve/   http://127.0.0.1:$RAY_METRICS_PORT/metrics
  ingestion          $RUN_DIR/ingest.log            http://127.0.0.1:$INGEST_METRICS_PORT/metrics
  drift monitor      $RUN_DIR/drift.log             http://127.0.0.1:$DRIFT_METRICS_PORT/metrics
  feature job        $RUN_DIR/feature-job.log       (batch: one JSON summary per run; every ${FEATURE_JOB_INTERVAL_S} s when events has lag)
  broker             $RUN_DIR/broker/               $BOOTSTRAP (Kafka protocol)

  Prometheus scrape targets (every /metrics of the stack), alerting rules in helm/surge/files/prometheus-rules.yaml:
    http://127.0.0.1:$RAY_METRICS_PORT/metrics http://127.0.0.1:$INGEST_METRICS_PORT/metrics http://127.0.0.1:$DRIFT_METRICS_PORT/metrics

  Why is a stage not ready?  RAY_ADDRESS=$RAY_ADDRESS RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH .venv/bin/serve status
  Ctrl-C or \`make stop\` stops everything.
BANNER
# Stay in the foreground until Ctrl-C or SIGTERM, then stop everything this script started.
while true; do sleep 30 & wait $!; done   # `wait` lets the stop trap run at once
