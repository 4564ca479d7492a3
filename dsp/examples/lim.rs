use loopmind_dsp::*;
struct Peak(f32, Vec<Vec<f32>>);
impl master::MasterSink for Peak {
    fn restart(&mut self) -> Result<(), String> {
        self.0 = 0.0;
        self.1 = vec![vec![]; 2];
        Ok(())
    }
    fn write(&mut self, c: &[&[f32]]) -> Result<(), String> {
        for (k, ch) in c.iter().enumerate() {
            for &v in ch.iter() {
                self.0 = self.0.max(v.abs());
            }
            self.1[k].extend_from_slice(ch);
        }
        Ok(())
    }
}
fn main() {
    let mut sections = testsignals::demo_arrangement();
    for s in &mut sections {
        s.bars *= 1;
    }
    let (audio, _) = testsignals::song(44100, &sections, 7);
    let prep = master::Prepared::new(audio).unwrap();
    let p = master::RenderParams {
        gain_db: 12.0,
        limit_dbtp: -1.0,
        limiter: limiter::LimiterSettings::default(),
        bits: 24,
        seed: 1,
    };
    let mut sink = Peak(0.0, vec![]);
    let m = master::measure_pass(&prep, &p, &mut sink).unwrap();
    println!(
        "sample peak {:.3} dB tp16 {:.3} tp4 {:.3} sp(ebur) {:.3}",
        lin_to_db(sink.0 as f64),
        m.true_peak_dbtp,
        m.loudness.true_peak_ebur128_dbtp,
        m.loudness.sample_peak_dbfs
    );
    let out = Audio::new(44100, sink.1.clone()).unwrap();
    let env = truepeak::peak_envelope(&out);
    let mx = env.iter().cloned().fold(0f32, f32::max);
    println!("env max of output {:.3}", lin_to_db(mx as f64));
    // where env of output exceeds
    let lim = db_to_lin(-1.0) as f32;
    let over: Vec<usize> = env
        .iter()
        .enumerate()
        .filter(|(_, &v)| v > lim * 1.001)
        .map(|(i, _)| i)
        .take(5)
        .collect();
    println!("over at {:?}", over);
    for &i in &over {
        println!(
            "in env*g {:?} out {:?}",
            prep.env[i] * db_to_lin(12.0) as f32,
            env[i]
        );
    }
}
