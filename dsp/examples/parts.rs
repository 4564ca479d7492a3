use loopmind_dsp::*;
use std::time::Instant;
fn main() {
    let mut sections = testsignals::demo_arrangement();
    for s in &mut sections {
        s.bars *= 4;
    }
    let (audio, _) = testsignals::song(44100, &sections, 7);
    let t = Instant::now();
    let _ = loudness::integrated(&audio).unwrap();
    println!("ebur128 I only {:?}", t.elapsed());
    let t = Instant::now();
    let mut m = ebur128::EbuR128::new(
        2,
        44100,
        ebur128::Mode::I | ebur128::Mode::LRA | ebur128::Mode::SAMPLE_PEAK,
    )
    .unwrap();
    m.add_frames_planar_f32(&[&audio.channels[0], &audio.channels[1]])
        .unwrap();
    println!("ebur128 I+LRA+SP {:?}", t.elapsed());
    let t = Instant::now();
    let mut m = ebur128::EbuR128::new(2, 44100, ebur128::Mode::TRUE_PEAK).unwrap();
    m.add_frames_planar_f32(&[&audio.channels[0], &audio.channels[1]])
        .unwrap();
    println!("ebur128 TP {:?}", t.elapsed());
    let t = Instant::now();
    let _ = truepeak::peak_envelope(&audio);
    println!("envelope {:?}", t.elapsed());
    let t = Instant::now();
    let tp = truepeak::true_peak_dbtp(&audio);
    println!("tp16 meter {:?} {tp}", t.elapsed());
    let t = Instant::now();
    let mut gc = limiter::GainComputer::new(&limiter::LimiterSettings::default(), 44100);
    let mut s = 0f32;
    for &x in &audio.channels[0] {
        s += gc.push(if x.abs() > 0.3 { 0.3 / x.abs() } else { 1.0 });
    }
    println!("gain computer {:?} {s}", t.elapsed());
    let t = Instant::now();
    let mut d = dither::Dither::new(24, 1);
    let mut s = 0f32;
    for &x in &audio.channels[0] {
        s += d.quantise(x);
    }
    for &x in &audio.channels[1] {
        s += d.quantise(x);
    }
    println!("dither {:?} {s}", t.elapsed());
}
