#!/usr/bin/env bash
# Speed and memory benchmark: a 5-minute 44.1 kHz stereo 24-bit WAV mastered
# for one target and for five, against the seed's ffmpeg chain, in one run.
# Prints CPU seconds (user+sys), ratios, and peak RSS vs the decoded f32 size.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release --locked -q
bin=target/release/loopmind
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$bin demo --out "$work/demo" >/dev/null
# 72 s song looped to 300 s.
ffmpeg -v error -stream_loop 4 -i "$work/demo/demo-song.wav" -t 300 -c:a pcm_s24le "$work/in.wav"
mode=${MODE:-cinematic}

cpu() { # cpu seconds and max RSS (kB) of a command
  /usr/bin/time -f "%U %S %M" -o "$work/t" "$@" >/dev/null 2>&1 || true
  awk '{printf "%.2f %d\n", $1+$2, $3}' "$work/t"
}
read ff_cpu ff_rss < <(cpu ffmpeg -v error -y -i "$work/in.wav" -af "acompressor=ratio=2.5:threshold=-18dB:makeup=3dB,bass=g=2,treble=g=3,stereotools=mlev=1.1,loudnorm=I=-14:TP=-1" "$work/ff.wav")
read one_cpu one_rss < <(cpu $bin master "$work/in.wav" --targets spotify --mode "$mode" --jobs 1 --out "$work/one")
read five_cpu five_rss < <(cpu $bin master "$work/in.wav" --targets spotify,apple-music,youtube,amazon-music,ebu-r128 --mode "$mode" --jobs 1 --out "$work/five")
decoded_kb=$((300 * 44100 * 2 * 4 / 1024))
echo "mode: $mode"
echo "ffmpeg seed chain:  ${ff_cpu} s CPU"
echo "loopmind 1 target:  ${one_cpu} s CPU, peak RSS $((one_rss / 1024)) MB"
echo "loopmind 5 targets: ${five_cpu} s CPU, peak RSS $((five_rss / 1024)) MB"
awk -v f="$ff_cpu" -v o="$one_cpu" -v v="$five_cpu" -v r1="$one_rss" -v r5="$five_rss" -v d="$decoded_kb" 'BEGIN {
  printf "ffmpeg / one target CPU:   %.2fx (goal >= 20x)\n", f / o
  printf "five / one target CPU:     %.2fx (goal <= 2.5x)\n", v / o
  printf "peak memory / decoded f32: %.2fx one target, %.2fx five (goal <= 2.5x)\n", r1 / d, r5 / d
}'
# Where one target's time goes, stage by stage (same kind of material), and
# our BS.1770 meter against the ebur128 crate on the same audio.
echo
cargo run --release --locked -q -p loopmind-dsp --example stages
