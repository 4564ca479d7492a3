#!/usr/bin/env bash
# The store-outage scenario of issue 12, in full: a catalog of 20 tracks, two
# workers, Garage frozen (SIGSTOP: it accepts connections and never answers,
# the worst kind of outage) for OUTAGE_S seconds (default 300) once the
# catalog is under way. Prints what the workers' /healthz said during the
# outage, how many jobs were handed back uncounted, the highest delivery any
# job reached, the dead letters, and the coordinator's summary.
# Store settings: attempts 3, response timeout 20 s (so a request to the
# frozen store fails in about a minute), probe every 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/loopmind
eval "$(bash tests/services/garage.sh | sed 's/^/export /')"
run=$(date +%s)
export LOOPMIND_QUEUE__JOBS=loopmind.jobs.outage-$run
export LOOPMIND_LOG__LEVEL=info
export LOOPMIND_WORKER__METRICS_PORT=0
export LOOPMIND_STORE__ATTEMPTS=${ATTEMPTS:-3}
export LOOPMIND_STORE__RESPONSE_TIMEOUT_S=${RESPONSE_TIMEOUT_S:-20}
export LOOPMIND_WORKER__STORE_PROBE_S=5
outage=${OUTAGE_S:-300}
n=${TRACKS:-20}
work=$(mktemp -d)
workers=()
cleanup() {
  pkill -CONT -x garage 2>/dev/null || true
  for p in "${workers[@]}"; do kill "$p" 2>/dev/null || true; done
  rabbitmqctl delete_queue "$LOOPMIND_QUEUE__JOBS" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
s3() { curl -s -f --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }

$bin demo --out "$work/demo" >/dev/null
mkdir -p "$work/mix"
tracks=""
for i in $(seq 1 "$n"); do
  # 60 s from the verse on, looped: each render takes a few seconds.
  ffmpeg -v error -stream_loop 2 -ss 8 -i "$work/demo/demo-song.wav" -t 60 -c:a pcm_s24le "$work/mix/t$i.wav"
  s3 -T "$work/mix/t$i.wav" "$LOOPMIND_STORE__ENDPOINT/$LOOPMIND_STORE__BUCKET/mixes/outage-$run/t$i.wav" >/dev/null
  tracks+="{\"id\": \"t$i\", \"source\": \"mixes/outage-$run/t$i.wav\"},"
done
catalog=outage-$run
echo "{\"catalog\": \"$catalog\", \"targets\": [\"spotify\", \"apple-music\"], \"tracks\": [${tracks%,}]}" >"$work/m.json"

for i in 0 1; do
  $bin worker 2>"$work/w$i.log" &
  workers+=($!)
done
sleep 1
t0=$(date +%s)
$bin coordinator --catalog "$work/m.json" >"$work/coord.out" 2>"$work/coord.log" &
coord=$!
port() { grep -o 'serving /healthz and /metrics addr=[0-9.:]*' "$work/w$1.log" | head -1 | sed 's/.*://'; }
until [ "$(cat "$work"/w*.log | grep -c 'job done')" -ge 3 ]; do sleep 0.5; done
echo "outage: Garage frozen for $outage s, $(($(date +%s) - t0)) s into the catalog"
pkill -STOP -x garage
stop=$(date +%s)
while [ $(($(date +%s) - stop)) -lt "$outage" ]; do
  for i in 0 1; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port $i)/healthz" || true)
    echo "  t+$(($(date +%s) - stop))s worker $i /healthz $code"
  done
  sleep 30
done
pkill -CONT -x garage
echo "store answering again at t+$(($(date +%s) - stop))s"
st=0
wait "$coord" || st=$?
t1=$(date +%s)
echo "coordinator exit $st after $((t1 - t0)) s"
grep -E "tracks:|^jobs:" "$work/coord.out"
echo "jobs handed back uncounted: $(cat "$work"/w*.log | grep -c 'job handed back uncounted' || true)"
echo "breaker trips (stopped taking jobs): $(cat "$work"/w*.log | grep -c 'stopped taking jobs' || true)"
echo "store answered again (per worker): $(cat "$work"/w*.log | grep -c 'the store answers again' || true)"
echo "highest delivery of any job: $(cat "$work"/w*.log | grep -o 'delivery=[0-9]*' | sort -t= -k2 -n | tail -1)"
echo "dead-lettered: $(grep -c 'dead_lettered' "$work/coord.out" || true)"
s3 "$LOOPMIND_STORE__ENDPOINT/$LOOPMIND_STORE__BUCKET/masters/$catalog/summary.json" >/dev/null \
  && echo "summary.json written" || echo "summary.json MISSING"
