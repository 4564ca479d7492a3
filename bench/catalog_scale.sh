#!/usr/bin/env bash
# The coordinator on catalogs of SIZES tracks (default "10000 100000"),
# against the real RabbitMQ and a single-node Garage (started if needed):
# peak memory (GNU time's maximum resident set), time to plan and enqueue
# (start to the "published" event: manifest read, every source checked,
# resume lookups, jobs published with confirms), time following the results,
# and time to build, print and save the summary (its "summary written"
# event). Results are synthesised (coordinator/examples/catalog_scale.rs
# answers every job at once with a real report.json renamed), so the
# coordinator's own cost is what is measured. Not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p loopmind --bin loopmind --example catalog_scale
bin=$PWD/target/release/loopmind
ex=$PWD/target/release/examples/catalog_scale
eval "$(bash tests/services/garage.sh | sed 's/^/export /')"
run=$(date +%s)
export LOOPMIND_QUEUE__JOBS=loopmind.jobs.scale-$run
export LOOPMIND_LOG__LEVEL=info
export LOOPMIND_LOG__FORMAT=json
work=$(mktemp -d)
answerer=""
cleanup() {
  [ -n "$answerer" ] && kill "$answerer" 2>/dev/null || true
  rabbitmqctl delete_queue "$LOOPMIND_QUEUE__JOBS" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

$bin demo --out "$work/demo" >/dev/null
report=$(find "$work/demo/masters" -name report.json | head -1)

event() { # log, message -> seconds since t0 at the event, and its `seconds` field
  python3 - "$@" <<'PY'
import json, sys
from datetime import datetime
path, want, t0 = sys.argv[1], sys.argv[2], float(sys.argv[3])
for line in open(path, errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    fields = event.get("fields", event)
    if fields.get("message") == want:
        at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        print(f"{at - t0:.2f} {fields.get('seconds', 0):.2f}")
        break
PY
}

printf "%8s %10s %12s %10s %10s %10s %8s\n" tracks peak_MiB plan+enqueue follow summary total seed
for n in ${SIZES:-10000 100000}; do
  prefix="mixes/scale-$run-$n"
  seed=$($ex seed "$n" "$prefix" "$work/m$n.json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["seconds"],1))')
  $ex answer "$report" >"$work/answer$n.json" &
  answerer=$!
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M %e' -o "$work/time$n" \
    $bin coordinator --catalog "$work/m$n.json" >"$work/out$n.txt" 2>"$work/log$n.json" \
    || { echo "the $n-track catalog failed:" >&2; tail -3 "$work/out$n.txt" "$work/log$n.json" >&2; exit 1; }
  kill "$answerer" 2>/dev/null || true
  wait "$answerer" 2>/dev/null || true
  answerer=""
  grep -q "^$n tracks: $n mastered, 0 failed" "$work/out$n.txt" \
    || { echo "the $n-track catalog did not master every track:" >&2; tail -3 "$work/out$n.txt" >&2; exit 1; }
  read -r published _ < <(event "$work/log$n.json" published "$t0")
  read -r summary_at summary < <(event "$work/log$n.json" "summary written" "$t0")
  read -r peak_kib wall <"$work/time$n"
  awk -v n="$n" -v m="$peak_kib" -v p="$published" -v s="$summary" -v a="$summary_at" -v w="$wall" -v d="$seed" \
    'BEGIN { printf "%8d %10.0f %12.1f %10.1f %10.1f %10.1f %8.1f\n", n, m / 1024, p, a - s - p, s, w, d }'
done
echo "(seconds; peak_MiB: the coordinator's maximum resident set; seed: putting the sources, not the coordinator's)"
