//! One scenario builder for the distributed tests: the settings, the
//! catalog (what each mix is), the workers and a timeline of waits and
//! faults are data; `start` makes the mixes, uploads them, writes the
//! manifest, starts the workers and the coordinator and plays the timeline.
//! What a test asserts stays in the test.
#![allow(dead_code)]

use super::services::{finish, garage_store, runtime, Cluster};
use super::{ffmpeg_convert, short_song, write_wav};
use loopmind_dsp::measure::{loudness, truepeak};
use loopmind_worker::decode::decode_file;
use loopmind_worker::report::TrackReport;
use loopmind_worker::s3::S3Store;
use loopmind_worker::store::ObjectStore;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// What one track of the catalog is.
pub enum Mix {
    /// The short test song as `kind`: wav24, float48, flac, mp3, mono,
    /// quiet (8 dB down) or poison (noise named .wav); its id is
    /// `t<position>-<kind>`.
    Short(&'static str),
    /// A song of `seconds`, long enough to be caught mid-render.
    Long(&'static str, usize),
    /// A file the test made, uploaded under its own name.
    File(&'static str, PathBuf),
    /// A manifest entry whose source is not in the store.
    Missing(&'static str),
    /// A second entry with the id and source of the track at this position.
    Again(usize),
}

/// One step of a scenario's timeline, played in order.
pub enum Step {
    /// Starts one more worker (numbered from 0 in start order).
    SpawnWorker,
    /// Waits until worker `w` has logged `event` `times` times.
    Await(usize, &'static str, usize),
    /// Waits until worker `w` has a render child running.
    AwaitRendering(usize),
    /// Waits for worker `w` to exit, and asserts it exited cleanly.
    AwaitCleanExit(usize),
    /// kill -9 of worker `w`.
    Kill(usize),
    /// SIGTERM to worker `w`.
    Sigterm(usize),
    /// `rabbitmqctl stop_app`, 3 s, `start_app`.
    RestartBroker,
    /// Garage stops answering (SIGSTOP) until `Thaw` or the run's end.
    FreezeStore,
    Thaw,
    Sleep(Duration),
    /// Declares the jobs queue (as any worker that ever started has).
    DeclareJobsQueue,
}

pub struct Scenario {
    tag: &'static str,
    settings: Vec<(&'static str, String)>,
    mixes: Vec<Mix>,
    targets: Vec<&'static str>,
    albums: Vec<(&'static str, &'static str)>,
    arrangements: Vec<(&'static str, &'static str)>,
    workers: usize,
    before: Vec<Step>,
    after: Vec<Step>,
}

impl Scenario {
    pub fn new(tag: &'static str) -> Self {
        Self {
            tag,
            settings: Vec::new(),
            mixes: Vec::new(),
            targets: vec!["spotify"],
            albums: Vec::new(),
            arrangements: Vec::new(),
            workers: 0,
            before: Vec::new(),
            after: Vec::new(),
        }
    }

    /// A setting as its environment variable (`LOOPMIND_…`).
    pub fn setting(mut self, key: &'static str, value: impl ToString) -> Self {
        self.settings.push((key, value.to_string()));
        self
    }

    pub fn mix(mut self, m: Mix) -> Self {
        self.mixes.push(m);
        self
    }

    pub fn shorts(mut self, kinds: &[&'static str]) -> Self {
        self.mixes.extend(kinds.iter().map(|k| Mix::Short(k)));
        self
    }

    pub fn targets(mut self, t: &[&'static str]) -> Self {
        self.targets = t.to_vec();
        self
    }

    pub fn album(mut self, track: &'static str, album: &'static str) -> Self {
        self.albums.push((track, album));
        self
    }

    /// An arrangement document (JSON text) for track `id`.
    pub fn arrangement(mut self, id: &'static str, text: &'static str) -> Self {
        self.arrangements.push((id, text));
        self
    }

    /// Workers started before the coordinator.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// A step played after the workers start, before the coordinator does.
    pub fn before(mut self, s: Step) -> Self {
        self.before.push(s);
        self
    }

    /// A step played once the coordinator runs.
    pub fn then(mut self, s: Step) -> Self {
        self.after.push(s);
        self
    }

    /// The catalog uploaded and its manifest written; nothing started.
    pub fn prepare(self) -> (Run, Vec<Step>, Vec<Step>) {
        let extra: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let cluster = Cluster::new(self.tag, &extra);
        let rt = runtime();
        let store = rt.block_on(garage_store(&cluster.env));
        let catalog = unique(self.tag);
        let dir = cluster.dir.path().to_path_buf();
        let mut run = Run {
            cluster,
            rt,
            store,
            catalog,
            dir,
            tracks: Vec::new(),
            manifest: PathBuf::new(),
            coordinator: None,
            frozen: None,
        };
        for (i, m) in self.mixes.iter().enumerate() {
            let t = run.upload(i, m);
            run.tracks.push(t);
        }
        let arrangements = run.upload_arrangements(&self.arrangements);
        run.manifest = run.write_manifest(&self.targets, &self.albums, &arrangements);
        for _ in 0..self.workers {
            run.cluster.spawn_worker();
        }
        (run, self.before, self.after)
    }

    /// Everything: catalog, workers, the steps before, the coordinator,
    /// the steps after.
    pub fn start(self) -> Run {
        let (mut run, before, after) = self.prepare();
        run.play(&before);
        run.coordinate();
        run.play(&after);
        run
    }
}

/// A scenario under way: its cluster, store and catalog.
pub struct Run {
    pub cluster: Cluster,
    pub rt: tokio::runtime::Runtime,
    pub store: S3Store,
    pub catalog: String,
    pub dir: PathBuf,
    /// (track id, source key) in manifest order.
    pub tracks: Vec<(String, String)>,
    pub manifest: PathBuf,
    coordinator: Option<Child>,
    frozen: Option<Frozen>,
}

/// How the coordinator ended.
pub struct Outcome {
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

impl Run {
    pub fn coordinate(&mut self) {
        let child = self.spawn_coordinator(&self.manifest.clone());
        self.coordinator = Some(child);
    }

    /// Another coordinator on the same catalog, from a manifest path or
    /// an s3:// URL.
    pub fn spawn_coordinator(&mut self, manifest: &Path) -> Child {
        let catalog = self.catalog.clone();
        self.cluster.spawn_coordinator(manifest, &catalog)
    }

    pub fn coordinator_pid(&self) -> u32 {
        self.coordinator.as_ref().expect("coordinator started").id()
    }

    /// Waits for the coordinator to end.
    pub fn finish(&mut self, limit: Duration) -> Outcome {
        let child = self.coordinator.take().expect("coordinator started");
        outcome(child, limit)
    }

    pub fn play(&mut self, steps: &[Step]) {
        for s in steps {
            self.step(s);
        }
    }

    fn step(&mut self, s: &Step) {
        let c = &mut self.cluster;
        let minute = Duration::from_secs(60);
        match s {
            Step::SpawnWorker => {
                c.spawn_worker();
            }
            Step::Await(w, event, n) => c.wait_event(*w, event, *n, 2 * minute),
            Step::AwaitRendering(w) => c.wait_rendering(*w, minute),
            Step::AwaitCleanExit(w) => {
                let st = c.wait_worker(*w, 5 * minute);
                assert!(st.success(), "worker {w} exit {st:?}:\n{}", c.log(*w));
            }
            Step::Kill(w) => c.kill9(*w),
            Step::Sigterm(w) => c.sigterm(*w),
            Step::RestartBroker => restart_broker(),
            Step::FreezeStore => self.frozen = Some(Frozen::new("garage")),
            Step::Thaw => self.frozen = None,
            Step::Sleep(d) => std::thread::sleep(*d),
            Step::DeclareJobsQueue => self.declare_jobs_queue(),
        }
    }

    /// An object of the store, if it is there.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.rt
            .block_on(self.store.get_bytes(key, 1 << 30))
            .unwrap()
    }

    pub fn has(&self, key: &str) -> bool {
        self.rt.block_on(self.store.head(key)).unwrap().is_some()
    }

    /// `masters/<catalog>/<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("masters/{}/{rest}", self.catalog)
    }

    pub fn report(&self, id: &str) -> TrackReport {
        let body = self
            .get(&self.key(&format!("{id}/report.json")))
            .unwrap_or_else(|| panic!("{id}: no report.json"));
        serde_json::from_slice(&body).unwrap()
    }

    /// The words of track `id`'s error.json.
    pub fn error(&self, id: &str) -> serde_json::Value {
        let body = self
            .get(&self.key(&format!("{id}/error.json")))
            .unwrap_or_else(|| panic!("{id}: no error.json"));
        serde_json::from_slice(&body).unwrap()
    }

    pub fn ids(&self) -> Vec<String> {
        self.tracks.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Every track mastered on target: [`Run::check`] of each.
    pub fn check_all(&self) {
        for id in self.ids() {
            self.check(&id);
        }
    }

    /// Every target of a mastered track: in the store, on target by our
    /// meter, the report the file's own figures.
    pub fn check(&self, id: &str) {
        let report = self.report(id);
        assert!(report.job.is_some(), "{id}: report carries no job stamp");
        for f in ["master_settings.json", "loudness.png"] {
            assert!(self.has(&self.key(&format!("{id}/{f}"))), "{id}: no {f}");
        }
        assert!(!self.has(&self.key(&format!("{id}/error.json"))));
        for t in &report.targets {
            let local = self.dir.join(format!("{id}-{}", t.output_file));
            let key = self.key(&format!("{id}/{}", t.output_file));
            self.rt
                .block_on(self.store.get_file(&key, &local, u64::MAX))
                .unwrap();
            let (audio, _) = decode_file(&local).unwrap();
            let l = loudness::measure(&audio).unwrap();
            let tp = truepeak::true_peak_dbtp(&audio);
            assert!(
                (l.integrated_lufs - t.target_lufs).abs() <= 0.1,
                "{id}/{}: {} LUFS",
                t.target,
                l.integrated_lufs
            );
            assert!(
                tp <= t.ceiling_dbtp && l.true_peak_ebur128_dbtp <= t.ceiling_dbtp,
                "{id}/{}: {tp} dBTP",
                t.target
            );
            assert!(
                (t.integrated_lufs - l.integrated_lufs).abs() < 0.005,
                "{id}: report is not the file"
            );
        }
    }

    /// A setting's value in the cluster's environment.
    pub fn env(&self, key: &str) -> String {
        let found = self.cluster.env.iter().find(|(k, _)| k == key);
        found.map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

impl Run {
    fn upload(&self, i: usize, m: &Mix) -> (String, String) {
        match m {
            Mix::Short(kind) => {
                let id = format!("t{i}-{kind}");
                let file = self.make_short(&id, kind);
                (id.clone(), self.put(&file))
            }
            Mix::Long(id, seconds) => {
                let f = self.dir.join(format!("{id}.wav"));
                write_wav(&f, &long_song(*seconds), 24, false);
                (id.to_string(), self.put(&f))
            }
            Mix::File(id, f) => (id.to_string(), self.put(f)),
            Mix::Missing(id) => (id.to_string(), self.mix_key(&format!("{id}.wav"))),
            Mix::Again(j) => self.tracks[*j].clone(),
        }
    }

    fn mix_key(&self, name: &str) -> String {
        format!("mixes/{}/{name}", self.catalog)
    }

    fn put(&self, f: &Path) -> String {
        let key = self.mix_key(&f.file_name().unwrap().to_string_lossy());
        self.rt.block_on(self.store.put_file(&key, f)).unwrap();
        key
    }

    fn make_short(&self, id: &str, kind: &str) -> PathBuf {
        let wav = self.dir.join(format!("{id}.wav"));
        let converted = |ext: &str, args: &[&str]| {
            let f = self.dir.join(format!("{id}.{ext}"));
            let src = self.dir.join(format!("{id}.src.wav"));
            std::fs::rename(&wav, &src).unwrap();
            ffmpeg_convert(&src, &f, args);
            f
        };
        match kind {
            "wav24" => write_wav(&wav, &short_song(44_100), 24, false),
            "float48" => write_wav(&wav, &short_song(48_000), 32, true),
            "flac" => {
                write_wav(&wav, &short_song(48_000), 24, false);
                return converted("flac", &[]);
            }
            "mp3" => {
                write_wav(&wav, &short_song(44_100), 16, false);
                return converted("mp3", &["-b:a", "192k"]);
            }
            "quiet" => {
                let mut a = short_song(44_100);
                a.channels.iter_mut().flatten().for_each(|v| *v *= 0.4);
                write_wav(&wav, &a, 24, false);
            }
            "mono" => {
                let mut a = short_song(22_050);
                a.channels.truncate(1);
                write_wav(&wav, &a, 16, false);
            }
            "poison" => {
                let junk: Vec<u8> = (0..50_000u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                std::fs::write(&wav, junk).unwrap();
            }
            other => panic!("unknown kind {other}"),
        }
        wav
    }

    fn upload_arrangements(&self, docs: &[(&str, &str)]) -> Vec<(String, String)> {
        docs.iter()
            .map(|(id, text)| {
                let key = self.mix_key(&format!("{id}.arrangement.json"));
                let bytes = text.as_bytes().to_vec();
                self.rt.block_on(self.store.put_bytes(&key, bytes)).unwrap();
                (id.to_string(), key)
            })
            .collect()
    }

    fn write_manifest(
        &self,
        targets: &[&str],
        albums: &[(&str, &str)],
        arrangements: &[(String, String)],
    ) -> PathBuf {
        let entry = |(id, key): &(String, String)| {
            let mut e = serde_json::json!({"id": id, "source": key});
            if let Some((_, a)) = albums.iter().find(|(t, _)| t == id) {
                e["album"] = serde_json::json!(a);
            }
            if let Some((_, k)) = arrangements.iter().find(|(t, _)| t == id) {
                e["arrangement"] = serde_json::json!(k);
            }
            e
        };
        let m = serde_json::json!({
            "catalog": self.catalog,
            "targets": targets,
            "mode": "cinematic",
            "tracks": self.tracks.iter().map(entry).collect::<Vec<_>>(),
        });
        let p = self.dir.join(format!("{}.json", self.catalog));
        std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        p
    }

    fn declare_jobs_queue(&self) {
        use loopmind_worker::{config::QueueSettings, rabbitmq};
        let q = QueueSettings {
            jobs: self.cluster.jobs_queue.clone(),
            ..Default::default()
        };
        self.rt.block_on(async {
            let conn = rabbitmq::connect(&q.url, "test", || true).await.unwrap();
            let ch = conn.create_channel().await.unwrap();
            rabbitmq::declare_jobs(&ch, &q).await.unwrap();
            let _ = conn.close(200, "declared".into()).await;
        });
    }
}

pub fn outcome(child: Child, limit: Duration) -> Outcome {
    let (st, out, err) = finish(child, limit);
    Outcome {
        code: st.code(),
        out,
        err,
    }
}

impl Outcome {
    /// Asserts the exit code and the summary line
    /// ("N tracks: M mastered, F failed").
    pub fn expect(&self, code: i32, summary: &str) {
        assert_eq!(self.code, Some(code), "{}\n{}", self.out, self.err);
        assert!(self.out.contains(summary), "{}\n{}", self.out, self.err);
    }
}

/// A name no other run uses.
pub fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("{tag}-{n}")
}

/// The demo arrangement repeated to `seconds`.
fn long_song(seconds: usize) -> loopmind_dsp::Audio {
    use loopmind_dsp::testsignals::{demo_arrangement, song};
    let sections: Vec<_> = demo_arrangement()
        .into_iter()
        .cycle()
        .take(seconds / 8 + 1)
        .collect();
    let (mut a, _) = song(44_100, &sections, 3);
    a.channels
        .iter_mut()
        .for_each(|c| c.truncate(seconds * 44_100));
    a
}

pub fn restart_broker() {
    let ctl = |what: &str| {
        let st = Command::new("rabbitmqctl").arg(what).output().unwrap();
        assert!(
            st.status.success(),
            "rabbitmqctl {what}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    ctl("stop_app");
    std::thread::sleep(Duration::from_secs(3));
    ctl("start_app");
    super::services::ensure_rabbitmq();
}

/// Resumes a frozen process when dropped (a failing test must not leave
/// the store frozen for the next).
struct Frozen(String);

impl Frozen {
    fn new(name: &str) -> Self {
        let st = Command::new("pkill")
            .args(["-STOP", "-x", name])
            .status()
            .unwrap();
        assert!(st.success(), "no {name} process to stop");
        Frozen(name.into())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-CONT", "-x", &self.0])
            .status();
    }
}
