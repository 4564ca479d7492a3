//! The render's memory does not grow with the track: the same song rendered
//! at 1 and at 12 minutes peaks at nearly the same heap (a counting
//! allocator), where an engine holding the decoded track would need 2.4x
//! its 254 MB for the long one.

use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_worker::render::{render_masters, RenderInputs};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The demo song (72 s) repeated to `minutes`, as a 24-bit WAV.
fn write_song(path: &Path, minutes: usize) {
    let (a, _) = song(44_100, &demo_arrangement(), 5);
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let frames = minutes * 60 * 44_100;
    for i in 0..frames {
        for c in &a.channels {
            let v = c[i % a.frames()].clamp(-1.0, 1.0);
            w.write_sample((v * 8_388_607.0) as i32).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// Peak heap (bytes) above what was live before, rendering `path`.
fn render_peak(path: &Path, out: &Path) -> usize {
    let targets = serde_json::json!([
        "spotify",
        // A second rate: the resampling path streams too.
        loopmind_dsp::targets::Target {
            rate: Some(48_000),
            ..loopmind_dsp::targets::preset("ebu-r128").unwrap()
        },
    ]);
    let request = serde_json::json!({"targets": targets, "mode": "cinematic"});
    let request = loopmind_worker::RenderRequest::from_json(request).unwrap();
    let opts = RenderInputs::of(request, Default::default());
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let report = render_masters(path, "t", out, &opts).unwrap();
    assert_eq!(report.targets.len(), 2);
    PEAK.load(Ordering::Relaxed) - base
}

#[test]
fn memory_does_not_grow_with_the_track() {
    let dir = tempfile::tempdir().unwrap();
    let (short, long) = (dir.path().join("short.wav"), dir.path().join("long.wav"));
    write_song(&short, 1);
    write_song(&long, 12);
    let p1 = render_peak(&short, &dir.path().join("o1"));
    let p12 = render_peak(&long, &dir.path().join("o12"));
    let mb = |b: usize| b as f64 / 1e6;
    eprintln!(
        "peak heap: 1 min {:.1} MB, 12 min {:.1} MB",
        mb(p1),
        mb(p12)
    );
    // Eleven more minutes may add per-second records (tens of bytes per
    // 100 ms) but not audio (10.6 MB per minute as decoded f32).
    assert!(
        p12 < p1 + 8_000_000,
        "1 min {:.1} MB, 12 min {:.1} MB",
        mb(p1),
        mb(p12)
    );
    assert!(p12 < 60_000_000, "{:.1} MB", mb(p12));
    // Both masters are the full length.
    let r = hound::WavReader::open(dir.path().join("o12/spotify.wav")).unwrap();
    assert_eq!(r.duration() as usize, 12 * 60 * 44_100);
}
