#!/usr/bin/env bash
# Distributed throughput on this machine, against the real RabbitMQ and a
# single-node Garage (started if needed):
#  - a catalog of short tracks rendered by 1 and by 2 worker processes
#    (tracks per minute);
#  - per-job overhead of queue and store on loopback: distributed time per job
#    with one worker minus local mode's (--jobs 1) on the same tracks;
#  - the time the coordinator takes to publish 10,000 jobs with confirms.
# TRACKS (default 24) short tracks of 12 s each, two targets; PUBLISH_JOBS
# (default 10000) jobs published. Figures are the ones the coordinator
# states on purpose: its JSON log events "sources checked" and "published"
# (their `seconds` fields), read by name, not by grepping text. CI runs it
# once on a tiny input (TRACKS=2 PUBLISH_JOBS=200) so it keeps running to
# its table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/loopmind
eval "$(bash tests/services/garage.sh | sed 's/^/export /')"
run=$(date +%s)
export LOOPMIND_QUEUE__JOBS=loopmind.jobs.bench-$run
export LOOPMIND_LOG__LEVEL=info
export LOOPMIND_LOG__FORMAT=json
export LOOPMIND_WORKER__METRICS_PORT=0 # several workers on one machine
work=$(mktemp -d)
catalogs=()
workers=()
cleanup() {
  for p in "${workers[@]}"; do kill "$p" 2>/dev/null || true; done
  rabbitmqctl delete_queue "$LOOPMIND_QUEUE__JOBS" >/dev/null 2>&1 || true
  for c in "${catalogs[@]}"; do
    rabbitmqctl delete_queue "loopmind.results.$c" >/dev/null 2>&1 || true
    rabbitmqctl delete_queue "loopmind.dead.$c" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
s3() { curl -s -f --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }

n=${TRACKS:-24}
targets='["spotify", "apple-music"]'
$bin demo --out "$work/demo" >/dev/null
mkdir -p "$work/mix"
tracks=""
for i in $(seq 1 "$n"); do
  # From the verse, chorus and breakdown (the intro is too quiet for -14 LUFS
  # in transparent mode, and would fail as unreachable).
  ffmpeg -v error -ss $((8 + (i * 7) % 44)) -t 12 -i "$work/demo/demo-song.wav" -c:a pcm_s24le "$work/mix/t$i.wav"
  s3 -T "$work/mix/t$i.wav" "$LOOPMIND_STORE__ENDPOINT/$LOOPMIND_STORE__BUCKET/mixes/bench-$run/t$i.wav" >/dev/null
  tracks+="{\"id\": \"t$i\", \"source\": \"mixes/bench-$run/t$i.wav\"},"
done
manifest() { # catalog -> manifest path
  echo "{\"catalog\": \"$1\", \"targets\": $targets, \"tracks\": [${tracks%,}]}" >"$work/$1.json"
  echo "$work/$1.json"
}

now() { date +%s.%N; }
# Registered here: catalog_with runs in a subshell.
catalogs+=("bench-$run-w1" "bench-$run-w2")
catalog_with() { # workers -> wall seconds for the whole catalog
  local w=$1 c="bench-$run-w$1"
  local m
  m=$(manifest "$c")
  workers=()
  for _ in $(seq 1 "$w"); do
    $bin worker 2>>"$work/workers.log" &
    workers+=($!)
  done
  sleep 1 # workers connected
  local t0
  t0=$(now)
  $bin coordinator --catalog "$m" >"$work/coord-$c.out" 2>"$work/coord-$c.log" \
    || { echo "catalog $c had failures:" >&2; grep -E "FAILED|tracks:" "$work/coord-$c.out" >&2; }
  local t1
  t1=$(now)
  for p in "${workers[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  workers=()
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}

t0=$(now)
$bin master "$work/mix" --targets spotify,apple-music --jobs 1 --out "$work/local" >/dev/null \
  || echo "local run had failures" >&2
t1=$(now)
local_wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
one=$(catalog_with 1)
two=$(catalog_with 2)

# PUBLISH_JOBS jobs with confirms: every track points at the same small mix;
# no workers, the coordinator is stopped once it has published.
jobs=${PUBLISH_JOBS:-10000}
c="bench-$run-publish"
catalogs+=("$c")
big="$work/$c.json"
python3 - "$big" "$c" "mixes/bench-$run/t1.wav" "$jobs" <<'PY'
import json, sys
path, cat, key, n = sys.argv[1:]
json.dump({"catalog": cat, "targets": ["spotify"],
           "tracks": [{"id": f"p{i}", "source": key} for i in range(int(n))]}, open(path, "w"))
PY
$bin coordinator --catalog "$big" >/dev/null 2>"$work/publish.log" &
cp=$!
event() { # message -> its `seconds` field, from the coordinator's JSON log
  python3 - "$work/publish.log" "$1" <<'PY'
import json, sys
path, want = sys.argv[1:]
for line in open(path, errors="replace"):
    try:
        event = json.loads(line)
        # tracing's JSON lines carry the fields flat or under "fields".
        fields = event.get("fields", event)
    except ValueError:
        continue
    if fields.get("message") == want:
        print(fields["seconds"])
        break
PY
}
for _ in $(seq 1 600); do [ -n "$(event published)" ] && break; sleep 0.1; done
kill $cp 2>/dev/null || true
wait $cp 2>/dev/null || true
publish=$(event published)
validate=$(event "sources checked")
[ -n "$publish" ] && [ -n "$validate" ] || {
  echo "the coordinator stated no 'published' or 'sources checked' event:" >&2
  tail -5 "$work/publish.log" >&2
  exit 1
}

awk -v n="$n" -v j="$jobs" -v l="$local_wall" -v a="$one" -v b="$two" -v p="$publish" -v v="$validate" 'BEGIN {
  printf "tracks: %d x 12 s, 2 targets each\n", n
  printf "local mode (--jobs 1):  %6.1f s  %6.1f tracks/min\n", l, n * 60 / l
  printf "1 worker:               %6.1f s  %6.1f tracks/min\n", a, n * 60 / a
  printf "2 workers:              %6.1f s  %6.1f tracks/min  (%.2fx one worker)\n", b, n * 60 / b, a / b
  printf "per-job overhead of queue + store (1 worker vs local): %.0f ms (goal < 50 ms)\n", (a - l) * 1000 / n
  printf "publish %d jobs with confirms: %.2f s (goal < 10 s for 10,000); checking their sources first: %.2f s\n", j, p, v
}'
