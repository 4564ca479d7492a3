#!/usr/bin/env bash
# The masters' fingerprints: renders the demo and a corpus through every road
# a render option travels (modes, sliders, amounts, codec check, formats,
# album, arrangement and emotion documents, custom targets, a reference, a
# settings file), then lists the SHA-256 of every audio file and picture
# written. A refactor that claims "outputs unchanged" compares this list
# before and after; report.json (timings) and master_settings.json (its
# shape may change) are left out.
#
#   bash bench/checksums.sh CORPUS_DIR > bench/checksums/corpus.sha256
#   bash bench/checksums.sh --demo      > bench/checksums/demo.sha256
#
# CORPUS_DIR holds the mixes (any format LoopMind decodes); the names used
# below are the ones bench/checksums/README.md says how to make from
# Debian's game music packages. Runs target/release/loopmind (built if
# missing), or $BENCH_BINARY.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BENCH_BINARY:-$PWD/target/release/loopmind}"
[ -x "$bin" ] || cargo build --release --locked -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

list() { # every audio file and picture under $1, relative, sorted
  (cd "$1" && find . -type f \( -name '*.wav' -o -name '*.flac' -o -name '*.aac' \
    -o -name '*.mp3' -o -name '*.opus' -o -name '*.ogg' -o -name '*.png' \) \
    -not -path '*/.*/*' -print0 | sort -z | xargs -0 sha256sum | sed "s|  \./|  $2/|")
}

if [ "${1:-}" = "--demo" ]; then
  "$bin" demo --out "$work/demo" >/dev/null
  list "$work/demo" demo
  exit 0
fi

corpus=$(cd "${1:?corpus folder}" && pwd)
run() { # name, then master's arguments
  local name=$1
  shift
  local code=0
  "$bin" master "$@" --out "$work/$name" >"$work/$name.log" 2>&1 || code=$?
  # 1 is a track that failed (its error is part of the fingerprint: the
  # exit code is listed); 2 is a command line the binary refused.
  if [ "$code" -gt 1 ]; then
    echo "run $name failed ($code):" >&2
    cat "$work/$name.log" >&2
    exit 1
  fi
  echo "exit $code  $name"
  list "$work/$name" "$name"
}

# Every target with a codec, every deliverable format, Transparent, enforce.
run formats "$corpus" --targets spotify,apple-music,youtube,club,cd,ebu-r128 \
  --mode transparent --formats flac,aac,mp3,opus,vorbis
# Sliders and amounts, Cinematic, the check reported only.
run sliders "$corpus" --targets amazon-music,soundcloud --mode cinematic \
  --dynamics 0.2 --reactivity 0.6 --amount eq=0.5,width=0.7 --codec-check report
# An album, Radio Loud, no check.
run album "$corpus" --targets spotify,tidal,deezer --mode radio-loud --album \
  --codec-check off
# Documents, a custom target with its own rate and depth, Lo-Fi.
cat >"$work/arr.json" <<'EOF'
{"structure": [{"section": "intro", "start": 0, "end": 12},
  {"section": "verse", "start": 12, "end": 30},
  {"section": "chorus", "start": 30, "end": 48},
  {"section": "outro", "start": 48, "end": 60}]}
EOF
cat >"$work/emo.json" <<'EOF'
{"curve": [{"time": 0, "intensity": 0.2, "emotion": "calm"},
  {"time": 30, "intensity": 0.9, "emotion": "euphoric"}, {"time": 60, "intensity": 0.4}]}
EOF
run documents "$corpus/wz-menu.wav" --lufs -12 --ceiling -1.5 --rate 48000 --bits 16 \
  --mode lo-fi --arrangement "$work/arr.json" --emotion "$work/emo.json"
# A reference track.
run reference "$corpus/hw-castle.wav" --targets apple-music,youtube \
  --reference "$corpus/fb-mainzik.wav"
# A settings file taken back (the formats run's plan), new targets.
run settings "$corpus/wz-menu.wav" --settings "$work/formats/wz-menu/master_settings.json" \
  --targets film,spotify
