#!/usr/bin/env bash
# The job service under load on this machine (not in CI; figures go in the
# issue's note and bench/RESULTS.md), once on SQLite and once on PostgreSQL:
#  - JOBS (default 10,000) submissions through POST /v1/jobs from CLIENTS
#    (default 16) connections, with the outbox relayed to the real RabbitMQ
#    (no workers draining it): seconds until all are accepted, and until the
#    outbox is empty (every message confirmed by the broker);
#  - GET /v1/jobs/{id} from GET_CLIENTS (default 200) connections for
#    GET_SECONDS (default 10): requests a second, p50 and p99 latency.
# The load generator is coordinator/examples/service_load.rs, on the same 2 cores as the
# service. Needs RabbitMQ on 127.0.0.1:5672, PostgreSQL on 127.0.0.1:5432
# (user postgres, trust), ffmpeg and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-10000}
CLIENTS=${CLIENTS:-16}
GET_CLIENTS=${GET_CLIENTS:-200}
GET_SECONDS=${GET_SECONDS:-10}
cargo build --release --locked -q
cargo build --release --locked -q -p loopmind --example service_load
bin=$PWD/target/release/loopmind
load=$PWD/target/release/examples/service_load
run=$(date +%s)
work=$(mktemp -d)
serve_pid=
queues=()
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  for q in "${queues[@]}"; do rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true; done
  psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS bench_service_$run WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
ffmpeg -loglevel error -f lavfi -i "sine=frequency=440:duration=5" -ac 2 -ar 44100 "$work/mix.wav"
results=()
for db in sqlite postgres; do
  export LOOPMIND_SERVICE__RENDER=queue
  export LOOPMIND_QUEUE__JOBS=loopmind.jobs.bench-service-$db-$run
  export LOOPMIND_SERVICE__CATALOG=bench-service-$db-$run
  queues+=("$LOOPMIND_QUEUE__JOBS" "loopmind.results.$LOOPMIND_SERVICE__CATALOG" "loopmind.dead.$LOOPMIND_SERVICE__CATALOG")
  export LOOPMIND_STORE__KIND=local LOOPMIND_STORE__ROOT=$work/store-$db
  export LOOPMIND_SERVICE__RATE_PER_S=0
  export LOOPMIND_LOG__LEVEL=warn
  if [ "$db" = postgres ]; then
    psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE bench_service_$run" >/dev/null
    export LOOPMIND_SERVICE__DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_service_$run
  else
    unset LOOPMIND_SERVICE__DATABASE_URL
  fi
  data=$work/data-$db
  port=$((18000 + RANDOM % 2000))
  base=http://127.0.0.1:$port
  key=$("$bin" keys create --name bench --scope submit,read,admin --data "$data" 2>/dev/null)
  "$bin" serve --data "$data" --listen "127.0.0.1:$port" 2>"$work/serve-$db.log" &
  serve_pid=$!
  for _ in $(seq 1 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
  up=$(curl -sf -X POST -H "Authorization: Bearer $key" "$base/v1/uploads")
  curl -sf -T "$work/mix.wav" "$(echo "$up" | jq -r .url)" >/dev/null
  upload=$(echo "$up" | jq -r .id)
  submit=$("$load" submit "$base" "$key" "$upload" "$JOBS" "$CLIENTS")
  get=$("$load" get "$base" "$key" "$GET_CLIENTS" "$GET_SECONDS")
  depth=$(rabbitmqctl -q list_queues name messages | awk -v q="$LOOPMIND_QUEUE__JOBS" '$1 == q {print $2}')
  results+=("$db $(echo "$submit" | jq -c .) $(echo "$get" | jq -c .) $depth")
  kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=
done
echo
printf '%-9s %8s %11s %11s %12s %9s %9s %9s %10s\n' database jobs accepted_s relayed_s in_queue get_per_s p50_ms p99_ms clients
for r in "${results[@]}"; do
  set -- $r
  printf '%-9s %8s %11.2f %11.2f %12s %9.0f %9.1f %9.1f %10s\n' "$1" \
    "$(echo "$2" | jq .jobs)" "$(echo "$2" | jq .accepted_s)" "$(echo "$2" | jq .relayed_s)" "$4" \
    "$(echo "$3" | jq .per_s)" "$(echo "$3" | jq .p50_ms)" "$(echo "$3" | jq .p99_ms)" "$(echo "$3" | jq .clients)"
done
