//! The distributed pipeline end to end on the real services: RabbitMQ on
//! 127.0.0.1:5672 and a single-node Garage, with real `loopmind worker` and
//! `loopmind coordinator` processes. Each test uses a jobs queue of its own;
//! they run one at a time (one of them restarts the broker).

mod common;

use common::services::{finish, http_get, metric, runtime, Cluster};
use common::{ffmpeg_convert, short_song, write_wav};
use loopmind_dsp::measure::{loudness, truepeak};
use loopmind_worker::decode::decode_file;
use loopmind_worker::report::TrackReport;
use loopmind_worker::store::ObjectStore;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("{tag}-{n}")
}

/// Makes mixes in `dir`, uploads them under `mixes/<catalog>/`, returns
/// (track id, key) pairs.
fn upload_mixes(
    rt: &tokio::runtime::Runtime,
    store: &dyn ObjectStore,
    dir: &Path,
    catalog: &str,
    kinds: &[&str],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let id = format!("t{i}-{kind}");
        let wav = dir.join(format!("{id}.src.wav"));
        let file = match *kind {
            "wav24" => {
                write_wav(&wav, &short_song(44_100), 24, false);
                wav.clone()
            }
            "float48" => {
                write_wav(&wav, &short_song(48_000), 32, true);
                wav.clone()
            }
            "flac" => {
                write_wav(&wav, &short_song(48_000), 24, false);
                let f = dir.join(format!("{id}.flac"));
                ffmpeg_convert(&wav, &f, &[]);
                f
            }
            "mp3" => {
                write_wav(&wav, &short_song(44_100), 16, false);
                let f = dir.join(format!("{id}.mp3"));
                ffmpeg_convert(&wav, &f, &["-b:a", "192k"]);
                f
            }
            "quiet" => {
                let mut a = short_song(44_100);
                a.channels.iter_mut().flatten().for_each(|v| *v *= 0.4);
                write_wav(&wav, &a, 24, false);
                wav.clone()
            }
            "mono" => {
                let mut a = short_song(22_050);
                a.channels.truncate(1);
                write_wav(&wav, &a, 16, false);
                wav.clone()
            }
            "poison" => {
                let f = dir.join(format!("{id}.wav"));
                let junk: Vec<u8> = (0..50_000u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                std::fs::write(&f, junk).unwrap();
                f
            }
            other => panic!("unknown kind {other}"),
        };
        let key = format!(
            "mixes/{catalog}/{id}.{}",
            file.extension().unwrap().to_string_lossy()
        );
        rt.block_on(store.put_file(&key, &file)).unwrap();
        out.push((id, key));
    }
    out
}

fn write_manifest(
    dir: &Path,
    catalog: &str,
    targets: &[&str],
    tracks: &[(String, String)],
) -> std::path::PathBuf {
    write_manifest_albums(dir, catalog, targets, tracks, &[])
}

/// `albums`: (track id, album) for the tracks that belong to one.
fn write_manifest_albums(
    dir: &Path,
    catalog: &str,
    targets: &[&str],
    tracks: &[(String, String)],
    albums: &[(&str, &str)],
) -> std::path::PathBuf {
    let entry = |id: &String, key: &String| {
        let mut e = serde_json::json!({"id": id, "source": key});
        if let Some((_, a)) = albums.iter().find(|(t, _)| t == id) {
            e["album"] = serde_json::json!(a);
        }
        e
    };
    let m = serde_json::json!({
        "catalog": catalog,
        "targets": targets,
        "mode": "cinematic",
        "tracks": tracks.iter().map(|(id, key)| entry(id, key)).collect::<Vec<_>>(),
    });
    let p = dir.join(format!("{catalog}.json"));
    std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    p
}

/// Every target of a mastered track: in the store, on target by our meter.
fn check_track(
    rt: &tokio::runtime::Runtime,
    store: &dyn ObjectStore,
    dir: &Path,
    catalog: &str,
    id: &str,
) {
    let prefix = format!("masters/{catalog}/{id}/");
    let bytes = rt
        .block_on(store.get_bytes(&format!("{prefix}report.json")))
        .unwrap()
        .unwrap_or_else(|| panic!("{id}: no report.json"));
    let report: TrackReport = serde_json::from_slice(&bytes).unwrap();
    assert!(report.job.is_some(), "{id}: report carries no job stamp");
    for f in ["master_settings.json", "loudness.png"] {
        assert!(
            rt.block_on(store.head(&format!("{prefix}{f}")))
                .unwrap()
                .is_some(),
            "{id}: no {f}"
        );
    }
    assert!(rt
        .block_on(store.head(&format!("{prefix}error.json")))
        .unwrap()
        .is_none());
    for t in &report.targets {
        let local = dir.join(format!("{id}-{}", t.output_file));
        rt.block_on(store.get_file(&format!("{prefix}{}", t.output_file), &local))
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

#[test]
fn catalog_with_a_poison_track_then_resume() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("catalog", &[]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("cat");
    let dir = c.dir.path().to_path_buf();
    let kinds = ["wav24", "float48", "flac", "mp3", "mono", "poison", "quiet"];
    let tracks = upload_mixes(&rt, &store, &dir, &catalog, &kinds);
    // Two tracks 8 dB apart form an album.
    let album = [("t0-wav24", "lp"), ("t6-quiet", "lp")];
    let manifest = write_manifest_albums(&dir, &catalog, &["spotify", "ebu-r128"], &tracks, &album);
    c.spawn_worker();
    c.spawn_worker();
    let coord = c.spawn_coordinator(&manifest, &catalog);
    let (st, out, err) = finish(coord, Duration::from_secs(600));
    assert_eq!(st.code(), Some(1), "one track is poison:\n{out}\n{err}");
    assert!(
        out.contains("7 tracks: 6 mastered, 1 failed"),
        "{out}\n{err}"
    );
    let good: Vec<&str> = tracks
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| !id.contains("poison"))
        .collect();
    for id in &good {
        check_track(&rt, &store, &dir, &catalog, id);
    }
    // The poison track: failed for good, said why, left no master or report.
    let poison = &tracks[5].0;
    let prefix = format!("masters/{catalog}/{poison}/");
    let get = |key: &str| rt.block_on(store.get_bytes(key)).unwrap();
    let e: serde_json::Value =
        serde_json::from_slice(&get(&format!("{prefix}error.json")).expect("error.json")).unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("not a recognised audio file"),
        "{e}"
    );
    assert_eq!(e["action"], "abort");
    assert!(get(&format!("{prefix}report.json")).is_none());
    assert!(get(&format!("{prefix}spotify.wav")).is_none());
    let summary: serde_json::Value = serde_json::from_slice(
        &get(&format!("masters/{catalog}/summary.json")).expect("summary.json"),
    )
    .unwrap();
    assert_eq!(
        (summary["mastered"].as_u64(), summary["failed"].as_u64()),
        (Some(6), Some(1))
    );
    let html = get(&format!("masters/{catalog}/summary.html")).expect("summary.html");
    assert!(String::from_utf8_lossy(&html).contains(poison.as_str()));
    // The album kept its tracks' relative level and lands on target as a whole.
    let report = |id: &str| -> TrackReport {
        serde_json::from_slice(&get(&format!("masters/{catalog}/{id}/report.json")).unwrap())
            .unwrap()
    };
    let (loud, quiet) = (report("t0-wav24"), report("t6-quiet"));
    for i in 0..2 {
        let d = loud.targets[i].integrated_lufs - quiet.targets[i].integrated_lufs;
        assert!(
            (d - 7.96).abs() < 0.15,
            "album tracks {d} LU apart, the mixes 7.96"
        );
    }
    assert_eq!(loud.album.as_ref().unwrap().album, "lp");
    let line = out
        .lines()
        .find(|l| l.starts_with("album lp: 2 tracks"))
        .expect("album line");
    assert!(
        line.contains("spotify -14.0") && line.contains("ebu-r128 -23.0"),
        "{line}"
    );
    // The workers say what they did, and the coordinator prints the totals.
    let (mut jobs, mut decode_failures, mut down) = (0.0, 0.0, 0.0);
    for i in 0..2 {
        let addr = c.metrics_addr(i);
        let (code, body) = http_get(&addr, "/healthz");
        assert_eq!(code, 200, "worker {i} unhealthy: {body}");
        let (code, page) = http_get(&addr, "/metrics");
        assert_eq!(code, 200);
        assert!(page.contains("loopmind_render_seconds_bucket"), "{page}");
        jobs += metric(&page, "loopmind_jobs_started_total");
        decode_failures += metric(
            &page,
            "loopmind_jobs_finished_total{outcome=\"failed\",reason=\"decode\"}",
        );
        down += metric(&page, "loopmind_downloaded_bytes_total");
    }
    assert_eq!((jobs, decode_failures), (9.0, 1.0));
    // No credentials in the logs.
    let secret = &c
        .env
        .iter()
        .find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY")
        .unwrap()
        .1;
    for i in 0..2 {
        let log = c.log(i);
        assert!(
            !log.contains(secret.as_str()) && !log.contains("guest:guest@"),
            "worker {i} logged a credential"
        );
    }
    assert!(!err.contains(secret.as_str()) && !err.contains("guest:guest@"));
    assert!(down > 1e6, "{down} bytes downloaded");
    assert!(
        out.contains("jobs: 9 (8 succeeded, 1 failed: decode 1)"),
        "{out}"
    );
    let started = |c: &Cluster| -> usize { (0..2).map(|i| c.count(i, "job started")).sum() };
    assert_eq!(
        started(&c),
        9,
        "each job once, and a measure pass for the album's two"
    );

    // Resume, from a manifest in the store: only tracks without a complete
    // report render again, and a re-render writes the same bits.
    let master = format!("masters/{catalog}/t1-float48/spotify.wav");
    let etag = rt.block_on(store.head(&master)).unwrap().unwrap().etag;
    rt.block_on(store.delete(&format!("masters/{catalog}/t1-float48/report.json")))
        .unwrap();
    rt.block_on(store.put_file("catalogs/resume.json", &manifest))
        .unwrap();
    let bucket = &c
        .env
        .iter()
        .find(|(k, _)| k == "LOOPMIND_STORE__BUCKET")
        .unwrap()
        .1;
    let at = format!("s3://{bucket}/catalogs/resume.json");
    let coord = c.spawn_coordinator(Path::new(&at), &catalog);
    let (st, out, err) = finish(coord, Duration::from_secs(300));
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains(
            "5 already complete and unchanged (same source and settings: skipped), 2 to render"
        ),
        "{out}"
    );
    assert_eq!(
        started(&c),
        11,
        "only the poison track and the one without a report again"
    );
    check_track(&rt, &store, &dir, &catalog, "t1-float48");
    assert_eq!(
        rt.block_on(store.head(&master)).unwrap().unwrap().etag,
        etag,
        "re-render differs"
    );
}

/// A mix long enough to be caught mid-render.
fn upload_long(
    rt: &tokio::runtime::Runtime,
    store: &dyn ObjectStore,
    dir: &Path,
    catalog: &str,
    id: &str,
    seconds: usize,
) -> (String, String) {
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
    let f = dir.join(format!("{id}.wav"));
    write_wav(&f, &a, 24, false);
    let key = format!("mixes/{catalog}/{id}.wav");
    rt.block_on(store.put_file(&key, &f)).unwrap();
    (id.to_string(), key)
}

#[test]
fn a_worker_killed_mid_render_loses_no_job() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("kill", &[]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("kill");
    let dir = c.dir.path().to_path_buf();
    let mut tracks = vec![upload_long(&rt, &store, &dir, &catalog, "long", 240)];
    tracks.extend(upload_mixes(&rt, &store, &dir, &catalog, &["wav24"]));
    let manifest = write_manifest(&dir, &catalog, &["spotify", "apple-music", "cd"], &tracks);
    let w0 = c.spawn_worker();
    let coord = c.spawn_coordinator(&manifest, &catalog);
    c.wait_event(w0, "job started", 1, Duration::from_secs(60));
    c.wait_rendering(w0, Duration::from_secs(60));
    assert_eq!(
        c.count(w0, "job done"),
        0,
        "too late to kill mid-render:\n{}",
        c.log(w0)
    );
    c.kill9(w0);
    let w1 = c.spawn_worker();
    let (st, out, err) = finish(coord, Duration::from_secs(600));
    assert_eq!(st.code(), Some(0), "{out}\n{err}\n{}", c.log(w1));
    for (id, _) in &tracks {
        check_track(&rt, &store, &dir, &catalog, id);
    }
    // The killed worker's job came back to the other one.
    let again = c
        .events(w1)
        .into_iter()
        .any(|e| e["message"] == "job started" && e["delivery"] == 2);
    assert!(again, "the killed job not redelivered:\n{}", c.log(w1));
}

#[test]
fn sigterm_finishes_the_job_in_hand_then_exits() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("term", &[]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("term");
    let dir = c.dir.path().to_path_buf();
    let mut tracks = vec![upload_long(&rt, &store, &dir, &catalog, "long", 120)];
    tracks.extend(upload_mixes(
        &rt,
        &store,
        &dir,
        &catalog,
        &["wav24", "mono"],
    ));
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let w0 = c.spawn_worker();
    let coord = c.spawn_coordinator(&manifest, &catalog);
    c.wait_event(w0, "job started", 1, Duration::from_secs(60));
    c.sigterm(w0);
    let st = c.wait_worker(w0, Duration::from_secs(300));
    assert!(st.success(), "worker exit {st:?}:\n{}", c.log(w0));
    let events: Vec<String> = c
        .events(w0)
        .iter()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    let log = c.log(w0);
    let stop = events
        .iter()
        .position(|m| m == "stop requested: finishing the job in hand")
        .expect("saw the signal");
    assert!(
        events[stop..].iter().any(|m| m == "job done"),
        "job in hand not finished:\n{log}"
    );
    assert_eq!(
        c.count(w0, "job started"),
        1,
        "took a new job after SIGTERM:\n{log}"
    );
    // The rest is for another worker.
    c.spawn_worker();
    let (st, out, err) = finish(coord, Duration::from_secs(600));
    assert_eq!(st.code(), Some(0), "{out}\n{err}");
    for (id, _) in &tracks {
        check_track(&rt, &store, &dir, &catalog, id);
    }
}

#[test]
fn a_job_that_keeps_failing_is_dead_lettered_and_counted() {
    let _g = serial();
    let rt = runtime();
    // Scratch space the worker cannot create: a transient failure every time.
    let mut c = Cluster::new(
        "dead",
        &[
            ("LOOPMIND_QUEUE__DELIVERY_LIMIT", "1"),
            ("LOOPMIND_WORKER__SCRATCH", "/dev/null/scratch"),
        ],
    );
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("dead");
    let dir = c.dir.path().to_path_buf();
    let tracks = upload_mixes(&rt, &store, &dir, &catalog, &["wav24"]);
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let w = c.spawn_worker();
    let coord = c.spawn_coordinator(&manifest, &catalog);
    let (st, out, err) = finish(coord, Duration::from_secs(300));
    assert_eq!(st.code(), Some(1), "{out}\n{err}\n{}", c.log(w));
    assert!(out.contains("1 tracks: 0 mastered, 1 failed"), "{out}");
    let e: serde_json::Value = serde_json::from_slice(
        &rt.block_on(store.get_bytes(&format!("masters/{catalog}/{}/error.json", tracks[0].0)))
            .unwrap()
            .expect("error.json"),
    )
    .unwrap();
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("delivery limit") && msg.contains("/dev/null/scratch"),
        "{msg}"
    );
    // Delivered twice (the limit allows one return), never again.
    assert_eq!(c.count(w, "job started"), 2, "{}", c.log(w));
}

#[test]
fn a_broker_restart_mid_catalog_is_survived() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("restart", &[]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("restart");
    let dir = c.dir.path().to_path_buf();
    let mut tracks = vec![upload_long(&rt, &store, &dir, &catalog, "long", 90)];
    tracks.extend(upload_mixes(
        &rt,
        &store,
        &dir,
        &catalog,
        &["wav24", "flac", "mono"],
    ));
    let manifest = write_manifest(&dir, &catalog, &["spotify", "ebu-r128"], &tracks);
    let w0 = c.spawn_worker();
    c.spawn_worker();
    let coord = c.spawn_coordinator(&manifest, &catalog);
    c.wait_event(w0, "job started", 1, Duration::from_secs(60));
    let ctl = |what: &str| {
        let st = std::process::Command::new("rabbitmqctl")
            .arg(what)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "rabbitmqctl {what}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    ctl("stop_app");
    std::thread::sleep(Duration::from_secs(3));
    ctl("start_app");
    common::services::ensure_rabbitmq();
    let (st, out, err) = finish(coord, Duration::from_secs(600));
    assert_eq!(st.code(), Some(0), "{out}\n{err}\n{}", c.log(w0));
    for (id, _) in &tracks {
        check_track(&rt, &store, &dir, &catalog, id);
    }
    assert!(
        c.count(w0, "lost RabbitMQ, reconnecting") > 0,
        "{}",
        c.log(w0)
    );
}

#[test]
fn a_manifest_with_problems_publishes_nothing() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("invalid", &[]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("invalid");
    let dir = c.dir.path().to_path_buf();
    let mut tracks = upload_mixes(&rt, &store, &dir, &catalog, &["wav24"]);
    tracks.push(("gone".into(), format!("mixes/{catalog}/gone.wav")));
    tracks.push(("t0-wav24".into(), tracks[0].1.clone()));
    let manifest = write_manifest(&dir, &catalog, &["spotify", "spotifyy"], &tracks);
    // The jobs queue exists before the run (as it does once any worker has
    // started), so "nothing published" is a count, not an absent queue.
    rt.block_on(async {
        let conn = loopmind_worker::rabbitmq::connect(
            &loopmind_worker::config::QueueSettings::default().url,
            "test",
            || true,
        )
        .await
        .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = loopmind_worker::config::QueueSettings {
            jobs: c.jobs_queue.clone(),
            ..Default::default()
        };
        loopmind_worker::rabbitmq::declare_jobs(&ch, &q)
            .await
            .unwrap();
        let _ = conn.close(200, "declared".into()).await;
    });
    let coord = c.spawn_coordinator(&manifest, &catalog);
    let (st, out, err) = finish(coord, Duration::from_secs(120));
    assert_eq!(st.code(), Some(2), "{out}\n{err}");
    // Every problem at once.
    for want in [
        "unknown target 'spotifyy'",
        "duplicate id",
        "track 'gone': source",
    ] {
        assert!(err.contains(want), "missing '{want}':\n{err}");
    }
    let q = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "name", "messages"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&q.stdout);
    let line = listing
        .lines()
        .find(|l| l.split('\t').next() == Some(c.jobs_queue.as_str()))
        .unwrap_or_else(|| panic!("no {} in:\n{listing}", c.jobs_queue));
    assert_eq!(
        line.split('\t').nth(1).map(str::trim),
        Some("0"),
        "jobs were published:\n{listing}"
    );
    // Nor were the catalog's own queues made.
    assert!(
        !listing.contains(&format!("loopmind.results.{catalog}")),
        "{listing}"
    );
}

/// The hostile set of `tests/hostile.rs` as a catalog, two workers: every
/// track ends mastered or with an error.json naming its problem, the
/// coordinator finishes on its own, and both workers are the same processes
/// at the end (every render ran in a child of theirs).
#[test]
fn a_hostile_catalog_finishes_and_no_worker_dies() {
    use common::hostile::*;
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new(
        "hostile",
        &[
            ("LOOPMIND_RENDER__MAX_DURATION_S", "60"),
            ("LOOPMIND_RENDER__MEMORY_BUDGET_MIB", "160"),
        ],
    );
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("hostile");
    let dir = c.dir.path().to_path_buf();
    let good = dir.join("good.wav");
    write_wav(&good, &short_song(44_100), 24, false);
    let files = [
        ("good", good.clone()),
        ("lying-flac", dir.join("lying.flac")),
        ("lying-mp3", dir.join("lying.mp3")),
        ("long", dir.join("long.flac")),
        ("budget", dir.join("budget.flac")),
        ("silences", dir.join("silences.wav")),
    ];
    lying_flac(&good, &files[1].1);
    lying_mp3(&good, &files[2].1);
    // 90 s against a 60 s limit; 50 s at 192 kHz decode to 77 MB, which
    // the engine's 2.4x does not fit in 160 MiB.
    tone_flac(&files[3].1, 8_000, 90.0);
    tone_flac(&files[4].1, 192_000, 50.0);
    write_wav(&files[5].1, &song_with_silence(), 24, false);
    let arrangement = format!("mixes/{catalog}/silences.arrangement.json");
    rt.block_on(store.put_bytes(&arrangement, SILENCES_ARRANGEMENT.as_bytes().to_vec()))
        .unwrap();
    let mut entries = Vec::new();
    for (id, f) in &files {
        let key = format!(
            "mixes/{catalog}/{}",
            f.file_name().unwrap().to_string_lossy()
        );
        rt.block_on(store.put_file(&key, f)).unwrap();
        let mut e = serde_json::json!({"id": id, "source": key});
        if *id == "silences" {
            e["arrangement"] = serde_json::json!(arrangement);
        }
        entries.push(e);
    }
    let manifest = dir.join("hostile.json");
    let m = serde_json::json!({"catalog": catalog, "targets": ["spotify"], "mode": "cinematic", "tracks": entries});
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();

    let (w0, w1) = (c.spawn_worker(), c.spawn_worker());
    let pids = (c.workers[w0].id(), c.workers[w1].id());
    let coord = c.spawn_coordinator(&manifest, &catalog);
    let (st, out, err) = finish(coord, Duration::from_secs(300));
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("6 tracks: 2 mastered, 4 failed"),
        "{out}\n{err}"
    );
    for i in [w0, w1] {
        assert!(
            c.workers[i].try_wait().unwrap().is_none(),
            "worker {i} died:\n{}",
            c.log(i)
        );
    }
    assert_eq!(pids, (c.workers[w0].id(), c.workers[w1].id()));
    for (id, want) in [
        ("lying-flac", "the header promises"),
        ("lying-mp3", "the header promises"),
        ("long", "(render.max_duration_s)"),
        ("budget", "ran out of its 160 MiB memory budget"),
    ] {
        let body = rt
            .block_on(store.get_bytes(&format!("masters/{catalog}/{id}/error.json")))
            .unwrap()
            .unwrap_or_else(|| panic!("{id}: no error.json"));
        let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(e["error"].as_str().unwrap().contains(want), "{id}: {e}");
    }
    let body = rt
        .block_on(store.get_bytes(&format!("masters/{catalog}/silences/report.json")))
        .unwrap()
        .expect("silences mastered");
    let r: TrackReport = serde_json::from_slice(&body).unwrap();
    assert_eq!(r.targets[0].sections[2].output_lufs, f64::NEG_INFINITY);
}

/// Two coordinators on one catalog: the second is refused at once, naming
/// the first; the first finishes with a correct summary.
#[test]
fn a_second_coordinator_on_a_running_catalog_is_refused() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("twocoord", &[]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("twocoord");
    let dir = c.dir.path().to_path_buf();
    let mut tracks = vec![upload_long(&rt, &store, &dir, &catalog, "long", 60)];
    tracks.extend(upload_mixes(
        &rt,
        &store,
        &dir,
        &catalog,
        &["wav24", "mono"],
    ));
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let w = c.spawn_worker();
    let first = c.spawn_coordinator(&manifest, &catalog);
    c.wait_event(w, "job started", 1, Duration::from_secs(60));
    let t0 = std::time::Instant::now();
    let second = c.spawn_coordinator(&manifest, &catalog);
    let (st, out, err) = finish(second, Duration::from_secs(60));
    assert_eq!(st.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("being run by another coordinator"), "{err}");
    assert!(err.contains(&format!("\"pid\":{}", first.id())), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(30));
    let (st, out, err) = finish(first, Duration::from_secs(300));
    assert_eq!(st.code(), Some(0), "{out}\n{err}\n{}", c.log(w));
    assert!(out.contains("3 tracks: 3 mastered, 0 failed"), "{out}");
    for (id, _) in &tracks {
        check_track(&rt, &store, &dir, &catalog, id);
    }
    // Its queues went away with it (a quorum queue's delete can take a
    // moment to show in the broker's listing under load: waited for).
    let gone = [
        format!("loopmind.results.{catalog}"),
        format!("loopmind.dead.{catalog}"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q = std::process::Command::new("rabbitmqctl")
            .args(["list_queues", "-q", "name"])
            .output()
            .unwrap();
        assert!(q.status.success(), "rabbitmqctl list_queues failed");
        let listing = String::from_utf8_lossy(&q.stdout).to_string();
        let left: Vec<&String> = gone
            .iter()
            .filter(|g| listing.lines().any(|l| l.trim() == g.as_str()))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left:?} outlived the catalog:\n{listing}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// SIGTERM six times in a row with jobs queued, a delivery limit of 1: the
/// consumer is cancelled before the job in hand is finished, so no job is
/// ever returned to the queue counted, none is dead-lettered.
#[test]
fn sigterm_again_and_again_burns_no_delivery() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("sixterm", &[("LOOPMIND_QUEUE__DELIVERY_LIMIT", "1")]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("sixterm");
    let dir = c.dir.path().to_path_buf();
    let tracks: Vec<_> = (0..8)
        .map(|i| upload_long(&rt, &store, &dir, &catalog, &format!("t{i}"), 12))
        .collect();
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let coord = c.spawn_coordinator(&manifest, &catalog);
    for _ in 0..6 {
        let w = c.spawn_worker();
        c.wait_event(w, "job started", 1, Duration::from_secs(60));
        c.sigterm(w);
        let st = c.wait_worker(w, Duration::from_secs(120));
        assert!(st.success(), "{}", c.log(w));
        assert_eq!(c.count(w, "job started"), 1, "{}", c.log(w));
    }
    let w = c.spawn_worker();
    let (st, out, err) = finish(coord, Duration::from_secs(300));
    assert_eq!(st.code(), Some(0), "{out}\n{err}\n{}", c.log(w));
    assert!(out.contains("8 tracks: 8 mastered, 0 failed"), "{out}");
    for i in 0..c.workers.len() {
        let counted = c
            .events(i)
            .into_iter()
            .any(|e| e["message"] == "job started" && e["delivery"] != 1);
        assert!(!counted, "a job came back counted:\n{}", c.log(i));
    }
}

/// Resumes a frozen process when dropped (a failing test must not leave
/// the store frozen for the next).
struct Frozen(String);

impl Frozen {
    fn new(name: &str) -> Self {
        let st = std::process::Command::new("pkill")
            .args(["-STOP", "-x", name])
            .status()
            .unwrap();
        assert!(st.success(), "no {name} process to stop");
        Frozen(name.into())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-CONT", "-x", &self.0])
            .status();
    }
}

/// The store stops answering mid-catalog (Garage frozen), with retries
/// scaled down: workers stop taking jobs and say so on /healthz, the jobs
/// in hand go back uncounted, and when the store answers again every track
/// is mastered, none dead-lettered, the summary written.
#[test]
fn a_store_outage_mid_catalog_loses_and_burns_no_job() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new(
        "outage",
        &[
            ("LOOPMIND_QUEUE__DELIVERY_LIMIT", "2"),
            ("LOOPMIND_STORE__ATTEMPTS", "2"),
            ("LOOPMIND_STORE__RESPONSE_TIMEOUT_S", "5"),
            ("LOOPMIND_WORKER__STORE_PROBE_S", "1"),
        ],
    );
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("outage");
    let dir = c.dir.path().to_path_buf();
    let tracks: Vec<_> = (0..10)
        .map(|i| upload_long(&rt, &store, &dir, &catalog, &format!("t{i}"), 20))
        .collect();
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let w0 = c.spawn_worker();
    let w1 = c.spawn_worker();
    let coord = c.spawn_coordinator(&manifest, &catalog);
    c.wait_event(w0, "job done", 1, Duration::from_secs(120));
    let addr = c.metrics_addr(w0);
    {
        let _frozen = Frozen::new("garage");
        // Both workers notice and stop taking jobs.
        for w in [w0, w1] {
            c.wait_event(
                w,
                "the store does not answer: stopped taking jobs",
                1,
                Duration::from_secs(120),
            );
        }
        let (code, body) = http_get(&addr, "/healthz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("object store"), "{body}");
        assert_eq!(
            metric(&http_get(&addr, "/metrics").1, "loopmind_store_up"),
            0.0
        );
        std::thread::sleep(Duration::from_secs(15));
    }
    let (st, out, err) = finish(coord, Duration::from_secs(600));
    assert_eq!(
        st.code(),
        Some(0),
        "{out}\n{err}\n{}\n{}",
        c.log(w0),
        c.log(w1)
    );
    assert!(out.contains("10 tracks: 10 mastered, 0 failed"), "{out}");
    for (id, _) in &tracks {
        check_track(&rt, &store, &dir, &catalog, id);
    }
    assert!(
        c.count(w0, "the store answers again: taking jobs") > 0,
        "{}",
        c.log(w0)
    );
    let (code, _) = http_get(&addr, "/healthz");
    assert_eq!(code, 200);
}

/// No worker at all: the jobs nobody takes are reported timed out after
/// `coordinator.idle_timeout_s`, the coordinator finishes with a summary,
/// and a worker that comes later drops the abandoned jobs unrendered.
#[test]
fn jobs_nobody_takes_time_out_and_are_dropped_later() {
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("idle", &[("LOOPMIND_COORDINATOR__IDLE_TIMEOUT_S", "3")]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("idle");
    let dir = c.dir.path().to_path_buf();
    let tracks = upload_mixes(&rt, &store, &dir, &catalog, &["wav24", "mono"]);
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let t0 = std::time::Instant::now();
    let coord = c.spawn_coordinator(&manifest, &catalog);
    let (st, out, err) = finish(coord, Duration::from_secs(60));
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(out.contains("2 tracks: 0 mastered, 2 failed"), "{out}");
    let e: serde_json::Value = serde_json::from_slice(
        &rt.block_on(store.get_bytes(&format!("masters/{catalog}/{}/error.json", tracks[0].0)))
            .unwrap()
            .expect("error.json"),
    )
    .unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("no worker took it"),
        "{e}"
    );
    assert!(rt
        .block_on(store.head(&format!("masters/{catalog}/summary.json")))
        .unwrap()
        .is_some());
    // The jobs are still queued; nobody waits for them any more.
    let w = c.spawn_worker();
    c.wait_event(
        w,
        "nobody follows this catalog any more: job dropped unrendered",
        2,
        Duration::from_secs(60),
    );
    assert_eq!(c.count(w, "mix downloaded"), 0, "{}", c.log(w));
}

/// A "worker" that speaks another protocol (this test, on the real broker):
/// it answers one job with a result of a newer schema, and takes the other
/// and never answers. The first fails naming the unreadable result, the
/// second times out `coordinator.job_deadline_s` after it was taken.
#[test]
fn unreadable_results_and_silent_workers_end_their_jobs() {
    use futures_util::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions};
    use loopmind_worker::rabbitmq;
    // A result from a newer LoopMind than this one.
    const NEWER: u32 = loopmind_worker::schema::SCHEMA_VERSION + 1;
    let _g = serial();
    let rt = runtime();
    let mut c = Cluster::new("protocol", &[("LOOPMIND_COORDINATOR__JOB_DEADLINE_S", "3")]);
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("protocol");
    let dir = c.dir.path().to_path_buf();
    let tracks = upload_mixes(&rt, &store, &dir, &catalog, &["wav24", "mono"]);
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let coord = c.spawn_coordinator(&manifest, &catalog);
    let jobs_queue = c.jobs_queue.clone();
    rt.block_on(async {
        let url = loopmind_worker::config::QueueSettings::default().url;
        let conn = rabbitmq::connect(&url, "test-worker", || true)
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = loopmind_worker::config::QueueSettings {
            jobs: jobs_queue,
            ..Default::default()
        };
        rabbitmq::declare_jobs(&ch, &q).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                q.jobs.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await
            .unwrap();
        for _ in 0..2 {
            let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
                .await
                .expect("a job within a minute")
                .unwrap()
                .unwrap();
            let job: loopmind_worker::job::Job = serde_json::from_slice(&d.data).unwrap();
            let reply = d.properties.reply_to().as_ref().unwrap().to_string();
            let props = rabbitmq::message_properties(&job.catalog, &job.job_id);
            if job.track == tracks[0].0 {
                let body =
                    serde_json::json!({"schema_version": NEWER, "job_id": job.job_id, "news": true});
                rabbitmq::publish_confirmed(&ch, &reply, body.to_string().as_bytes(), props)
                    .await
                    .unwrap();
            } else {
                let props = props.with_type(rabbitmq::STARTED.into());
                rabbitmq::publish_confirmed(
                    &ch,
                    &reply,
                    &rabbitmq::started_message(&job.job_id),
                    props,
                )
                .await
                .unwrap();
            }
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        let (st, out, err) =
            tokio::task::spawn_blocking(move || finish(coord, Duration::from_secs(60)))
                .await
                .unwrap();
        let _ = conn.close(200, "done".into()).await;
        assert_eq!(st.code(), Some(1), "{out}\n{err}");
        assert!(out.contains("2 tracks: 0 mastered, 2 failed"), "{out}");
        assert!(
            out.contains("unreadable_result 1") && out.contains("timed_out 1"),
            "{out}"
        );
    });
    let error = |id: &str| -> String {
        let v: serde_json::Value = serde_json::from_slice(
            &rt.block_on(store.get_bytes(&format!("masters/{catalog}/{id}/error.json")))
                .unwrap()
                .expect("error.json"),
        )
        .unwrap();
        v["error"].as_str().unwrap().to_string()
    };
    let e = error(&tracks[0].0);
    assert!(
        e.contains("unreadable result") && e.contains(&format!("schema_version {NEWER} is newer")),
        "{e}"
    );
    let e = error(&tracks[1].0);
    assert!(
        e.contains("timed out: no result 3 s after a worker took it"),
        "{e}"
    );
}

/// Two workers on one machine with the same metrics port: the second moves
/// to the next free port, says so, and both serve and take jobs.
#[test]
fn a_taken_metrics_port_does_not_stop_a_second_worker() {
    let _g = serial();
    let rt = runtime();
    // A port free now (the OS's pick), and the one after it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = port.to_string();
    let mut c = Cluster::new(
        "port",
        &[
            ("LOOPMIND_WORKER__METRICS_PORT", p.as_str()),
            ("LOOPMIND_WORKER__METRICS_ADDR", "127.0.0.1"),
        ],
    );
    let store = rt.block_on(common::services::garage_store(&c.env));
    let catalog = unique("port");
    let dir = c.dir.path().to_path_buf();
    let tracks = upload_mixes(
        &rt,
        &store,
        &dir,
        &catalog,
        &["wav24", "mono", "float48", "flac"],
    );
    let manifest = write_manifest(&dir, &catalog, &["spotify"], &tracks);
    let w0 = c.spawn_worker();
    c.wait_event(
        w0,
        "serving /healthz and /metrics",
        1,
        Duration::from_secs(30),
    );
    let w1 = c.spawn_worker();
    c.wait_event(
        w1,
        "metrics port taken; using the next free one",
        1,
        Duration::from_secs(30),
    );
    assert_eq!(c.metrics_addr(w0), format!("127.0.0.1:{port}"));
    let second = c.metrics_addr(w1);
    assert_ne!(second, format!("127.0.0.1:{port}"));
    c.wait_event(w1, "connected to RabbitMQ", 1, Duration::from_secs(30));
    assert_eq!(http_get(&second, "/healthz").0, 200);
    let coord = c.spawn_coordinator(&manifest, &catalog);
    let (st, out, err) = finish(coord, Duration::from_secs(300));
    assert_eq!(st.code(), Some(0), "{out}\n{err}");
    assert!(c.count(w1, "job done") > 0, "{}", c.log(w1));
}
