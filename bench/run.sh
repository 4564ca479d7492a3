#!/usr/bin/env bash
# Speed and memory benchmark, all in one run on one machine:
# - CPU seconds (user+sys) and wall time of LoopMind mastering a 5-minute
#   stereo track for one target and for five, against the seed's ffmpeg chain
#   on the same file;
# - peak RSS at 5 and at 30 minutes of the same material (the render streams:
#   it should not grow), and CPU per audio second at both.
# Usage: bash bench/run.sh [MIX]   (a real track; default: the demo song
# looped). MODE=transparent|cinematic|radio-loud|lo-fi (default cinematic).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release --locked -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy: rebuilding target/ while this runs must not change what is measured.
bin=$work/loopmind
cp target/release/loopmind "$bin"
mode=${MODE:-cinematic}
if [ $# -ge 1 ]; then
  src=$1
else
  $bin demo --out "$work/demo" >/dev/null
  src=$work/demo/demo-song.wav
fi
# 5 minutes (the material looped if shorter), and 30 minutes of it.
ffmpeg -v error -stream_loop -1 -i "$src" -t 300 -c:a pcm_s24le "$work/in.wav"
ffmpeg -v error -stream_loop 5 -i "$work/in.wav" -t 1800 -c:a pcm_s24le "$work/in30.wav"
rate=$(ffprobe -v error -select_streams a:0 -show_entries stream=sample_rate -of csv=p=0 "$work/in.wav")

run() { # label, command...: "cpu wall rss_kB"
  local label=$1; shift
  /usr/bin/time -f "%U %S %e %M" -o "$work/t" "$@" >/dev/null 2>&1 || { echo "$label failed" >&2; exit 1; }
  awk '{printf "%.2f %.2f %d\n", $1+$2, $3, $4}' "$work/t"
}
read ff_cpu ff_wall _ < <(run ffmpeg ffmpeg -v error -y -i "$work/in.wav" -af "acompressor=ratio=2.5:threshold=-18dB:makeup=3dB,bass=g=2,treble=g=3,stereotools=mlev=1.1,loudnorm=I=-14:TP=-1" "$work/ff.wav")
# The engine's figures without the codec check; its cost is measured apart.
read one_cpu one_wall one_rss < <(run one $bin master "$work/in.wav" --targets spotify --mode "$mode" --jobs 1 --codec-check off --out "$work/one")
read five_cpu five_wall five_rss < <(run five $bin master "$work/in.wav" --targets spotify,apple-music,youtube,club,ebu-r128 --mode "$mode" --jobs 1 --codec-check off --out "$work/five")
read long_cpu long_wall long_rss < <(run long $bin master "$work/in30.wav" --targets spotify --mode "$mode" --jobs 1 --codec-check off --out "$work/long")
read codec_cpu codec_wall _ < <(run codecs $bin master "$work/in.wav" --targets spotify,apple-music,youtube,club,ebu-r128 --mode "$mode" --jobs 1 --out "$work/codecs")
echo "material: ${1:-demo song looped}, ${rate} Hz; mode: $mode"
echo "| work | CPU s | wall s | x seed chain CPU |"
echo "|---|---|---|---|"
row() { awk -v l="$1" -v c="$2" -v w="$3" -v f="$ff_cpu" 'BEGIN { printf "| %s | %.2f | %.2f | %.2f |\n", l, c, w, c / f }'; }
row "seed ffmpeg chain, one output, nothing verified" "$ff_cpu" "$ff_wall"
row "LoopMind, 1 target, codec check off" "$one_cpu" "$one_wall"
row "LoopMind, 5 targets, codec check off" "$five_cpu" "$five_wall"
row "LoopMind, 5 targets, codec check enforced" "$codec_cpu" "$codec_wall"
row "LoopMind, 1 target, 30 min, check off" "$long_cpu" "$long_wall"
echo "peak RSS: 1 target $((one_rss / 1024)) MB, 5 targets $((five_rss / 1024)) MB, 30 min $((long_rss / 1024)) MB"
# Each codec's encode + decode + measure, as the report states it (the
# last render's check; a target rendered again under enforce pays twice).
python3 - "$work/codecs" <<'PY'
import glob, json, sys
for rep in glob.glob(sys.argv[1] + "/*/report.json"):
    for t in json.load(open(rep))["targets"]:
        for c in t.get("codecs", []):
            k = c["codec"]
            print(f"  {t['target']:<13} {k['format']} {k['kbps']}k: {c['cpu_seconds']:.2f} s CPU, "
                  f"{c.get('encoded_fraction', 1):.0%} of the master encoded, render {c.get('render', 1)}, "
                  f"decoded true peak {c['true_peak_dbtp']:.2f} dBTP (ceiling {t['ceiling_dbtp']})")
PY
awk -v f="$ff_cpu" -v o="$one_cpu" -v v="$five_cpu" -v l="$long_cpu" -v r1="$one_rss" -v rl="$long_rss" 'BEGIN {
  printf "ffmpeg / one target CPU:     %.2fx (goal >= 20x)\n", f / o
  printf "five / one target CPU:       %.2fx (goal <= 2x)\n", v / o
  printf "CPU per audio second, 30 / 5 min: %.2fx (goal <= 1.25x)\n", (l / 1800) / (o / 300)
  printf "peak RSS, 30 / 5 min:        %.2fx (goal: independent of duration)\n", rl / r1
}'
# Where one target's time goes, pass by pass (the product pipeline on the
# demo material, stores in memory).
echo
cargo run --release --locked -q -p loopmind-dsp --example stages
