use std::time::Instant;
fn main() {
    let n = 12_700_000usize;
    let inter: Vec<f32> = (0..2 * n)
        .map(|i| ((i as f32) * 0.001).sin() * 0.3)
        .collect();
    let a: Vec<f32> = inter.iter().step_by(2).cloned().collect();
    for mode in [
        ebur128::Mode::I,
        ebur128::Mode::I | ebur128::Mode::HISTOGRAM,
        ebur128::Mode::SAMPLE_PEAK,
        ebur128::Mode::I | ebur128::Mode::LRA | ebur128::Mode::S,
    ] {
        let t = Instant::now();
        let mut m = ebur128::EbuR128::new(2, 44100, mode).unwrap();
        m.add_frames_f32(&inter).unwrap();
        println!("{mode:?} interleaved {:?}", t.elapsed());
        let t = Instant::now();
        let mut m = ebur128::EbuR128::new(2, 44100, mode).unwrap();
        for c in inter.chunks(2 * 65536) {
            m.add_frames_f32(c).unwrap();
        }
        println!("{mode:?} interleaved chunked {:?}", t.elapsed());
        let t = Instant::now();
        let mut m = ebur128::EbuR128::new(2, 44100, mode).unwrap();
        m.add_frames_planar_f32(&[&a, &a]).unwrap();
        println!("{mode:?} planar {:?}", t.elapsed());
    }
}
