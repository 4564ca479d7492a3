#!/usr/bin/env python3
"""The codec guarantee, checked independently of LoopMind's own encoders:
every shipped master of a run (OUT/<track>/report.json), encoded by ffmpeg's
own encoders at each of its platform's bitrates (aac, libvorbis, libopus,
libmp3lame), decoded to float and measured by ../shared/tools/measure.py
(16x true peak, pyloudnorm): peak at or under the target's ceiling + 0.2 dB;
the master's loudness within 0.1 LU of its aim (the target's, or the
reachable one where it shipped short).

  python3 bench/codec_guarantee.py OUT [OUT ...]

Prints one line per (master, codec) and a last line with the failures
(exit 1 if any)."""
import glob, json, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURE = os.path.join(ROOT, "..", "shared", "tools", "measure.py")
ENCODER = {"aac": "aac", "vorbis": "libvorbis", "opus": "libopus", "mp3": "libmp3lame"}
EXT = {"aac": "m4a", "vorbis": "ogg", "opus": "opus", "mp3": "mp3"}

def measure(paths):
    out = subprocess.run([sys.executable, MEASURE, *paths], check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]

def main():
    failures, lines = [], 0
    tmp = tempfile.mkdtemp()
    for out in sys.argv[1:]:
        for rep in sorted(glob.glob(os.path.join(out, "*", "report.json"))):
            tdir = os.path.dirname(rep)
            for t in json.load(open(rep))["targets"]:
                if t.get("withheld"):
                    continue
                wav = os.path.join(tdir, t["output_file"])
                aim = (t.get("short") or {}).get("aimed_lufs", t["target_lufs"])
                m = measure([wav])[0]
                if abs(m["lufs"] - aim) > 0.1:
                    failures.append(f"{wav}: {m['integrated_lufs']:.3f} LUFS against {aim:.3f}")
                for c in t.get("codecs", []):
                    fmt, kbps = c["codec"]["format"], c["codec"]["kbps"]
                    enc = os.path.join(tmp, f"x.{EXT[fmt]}")
                    dec = os.path.join(tmp, "x.wav")
                    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", wav, "-c:a", ENCODER[fmt],
                                    "-b:a", f"{kbps}k", enc], check=True)
                    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", enc, "-c:a", "pcm_f32le", dec],
                                   check=True)
                    d = measure([dec])[0]
                    tp = max(d["tp16_db"], d["tp4_db"])
                    ok = tp <= t["ceiling_dbtp"] + 0.2
                    lines += 1
                    print(f"{wav}\t{fmt} {kbps}k\t{tp:.3f} dBTP (ceiling {t['ceiling_dbtp']})\t{'ok' if ok else 'OVER'}")
                    if not ok:
                        failures.append(f"{wav} {fmt} {kbps}k: {tp:.3f} dBTP over {t['ceiling_dbtp']} + 0.2")
    print(f"{lines} encodes checked; {len(failures)} failures" + "".join("\n  " + f for f in failures))
    sys.exit(1 if failures else 0)

main()
