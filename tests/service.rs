//! The job service end to end, driven only over HTTP as a label's backend
//! would: a real `loopmind serve` (embedded: SQLite, or the same on a real
//! PostgreSQL), keys made by `loopmind keys create`, outputs measured by an
//! independent meter (ffmpeg).

mod common;

use common::api::{
    call, download, get_text, put_chunked, put_expecting, put_file, Contract, Database, Events,
    Receiver, Service,
};
use common::services::Cluster;
use common::{ffmpeg_meter, short_song, write_wav};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A mix of the short test song, uploaded for `key`: the upload's id.
fn upload(svc: &Service, key: &str, name: &str) -> String {
    let mix = svc.data.path().join(format!("{name}.wav"));
    write_wav(&mix, &short_song(44_100), 24, false);
    let (st, up) = call("POST", &svc.url("/v1/uploads"), Some(key), &[], None);
    assert_eq!(st, 201, "{up}");
    assert_eq!(up["method"], "PUT");
    let (st, body) = put_file(up["url"].as_str().unwrap(), &mix);
    assert_eq!(st, 200, "{body}");
    up["id"].as_str().unwrap().to_string()
}

fn job_body(upload: &str, targets: &[&str]) -> String {
    json!({"input": {"upload_id": upload}, "targets": targets, "mode": "cinematic"}).to_string()
}

fn submit(svc: &Service, key: &str, idem: Option<&str>, body: &str) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = idem.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    call(
        "POST",
        &svc.url("/v1/jobs"),
        Some(key),
        &headers,
        Some(body),
    )
}

fn get_job(svc: &Service, key: &str, id: &str) -> Value {
    let (st, j) = call(
        "GET",
        &svc.url(&format!("/v1/jobs/{id}")),
        Some(key),
        &[],
        None,
    );
    assert_eq!(st, 200, "{j}");
    j
}

/// Polls a job until it is in a final state.
fn wait_final(svc: &Service, key: &str, id: &str, limit: Duration) -> Value {
    follow_progress(svc, key, id, limit).0
}

/// Polls a job until it is in a final state, noting each progress it
/// showed on the way.
fn follow_progress(svc: &Service, key: &str, id: &str, limit: Duration) -> (Value, Vec<f64>) {
    let (t, mut seen) = (Instant::now(), Vec::<f64>::new());
    loop {
        let j = get_job(svc, key, id);
        let p = j["progress"].as_f64().unwrap();
        if seen.last() != Some(&p) {
            seen.push(p);
        }
        if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
            return (j, seen);
        }
        assert!(
            t.elapsed() < limit,
            "job {id} still {}:\n{}",
            j["status"],
            svc.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Every target's master downloaded by its URL and measured by ffmpeg.
fn check_masters(svc: &Service, job: &Value) {
    let targets = job["targets"].as_array().unwrap();
    assert!(!targets.is_empty(), "{job}");
    for t in targets {
        let file = &t["files"][0];
        let local = svc.data.path().join(format!(
            "{}-{}",
            job["id"].as_str().unwrap(),
            file["name"].as_str().unwrap()
        ));
        download(file["url"].as_str().unwrap(), &local);
        let (lufs, peak) = ffmpeg_meter(&local);
        let want = t["target_lufs"].as_f64().unwrap();
        assert!(
            (lufs - want).abs() <= 0.1,
            "{}: {lufs} LUFS, target {want}",
            t["target"]
        );
        let ceiling = t["ceiling_dbtp"].as_f64().unwrap();
        assert!(
            peak <= ceiling,
            "{}: {peak} dBTP over {ceiling}",
            t["target"]
        );
        assert!(
            (t["integrated_lufs"].as_f64().unwrap() - lufs).abs() <= 0.1,
            "the job's figure is not the file's"
        );
    }
}

/// The settings of a `serve` whose jobs go to the cluster's queue and
/// store, for its workers to render.
fn queue_shaped(cluster: &Cluster) -> Vec<(String, String)> {
    let mut env = cluster.env.clone();
    env.push(("LOOPMIND_SERVICE__RENDER".into(), "queue".into()));
    // Results of its own: other tests' services share the broker.
    let catalog = cluster.jobs_queue.replace("loopmind.jobs.", "svc-");
    env.push(("LOOPMIND_SERVICE__CATALOG".into(), catalog));
    env
}

/// Settings as `Service::start` takes them.
fn pairs(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn masters_a_track_over_http(db: Database, shape: &[(String, String)]) {
    let mut settings: Vec<(&str, &str)> = vec![
        ("LOOPMIND_SERVICE__WORKERS", "1"),
        // The receiver is this test, on loopback; retries a second apart.
        ("LOOPMIND_SERVICE__WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("LOOPMIND_SERVICE__WEBHOOK_RETRY_S", "1,1,1"),
    ];
    settings.extend(pairs(shape));
    let svc = Service::start(db, &settings);
    let key = svc.key("acme", None, "submit,read");
    let rival = svc.key("rival", None, "submit,read");
    let receiver = Receiver::start(1);
    let hook =
        json!({"url": receiver.url, "events": ["job.succeeded", "job.cancelled"]}).to_string();
    let (st, hook) = call(
        "POST",
        &svc.url("/v1/webhooks"),
        Some(&key),
        &[],
        Some(&hook),
    );
    assert_eq!(st, 201, "{hook}");
    let up = upload(&svc, &key, "mix");
    // Followed from before the submission, by both tenants.
    let events = Events::follow(&svc.base, &key);
    let rival_events = Events::follow(&svc.base, &rival);
    let body = job_body(&up, &["spotify", "apple-music"]);
    let contract = Contract::fetch(&svc);
    let (st, job) = submit(&svc, &key, Some("release-42"), &body);
    assert_eq!(st, 201, "{job}");
    contract.check("Job", &job);
    assert_eq!(job["status"], "queued");
    let id = job["id"].as_str().unwrap().to_string();
    // The same key: the same job; with another body: refused.
    let (st, again) = submit(&svc, &key, Some("release-42"), &body);
    assert_eq!(
        (st, again["id"].as_str()),
        (200, Some(id.as_str())),
        "{again}"
    );
    let (st, e) = submit(&svc, &key, Some("release-42"), &job_body(&up, &["spotify"]));
    assert_eq!(st, 409, "{e}");
    contract.check("ErrorBody", &e);
    // Another tenant sees neither the job nor the upload.
    let (st, _) = call(
        "GET",
        &svc.url(&format!("/v1/jobs/{id}")),
        Some(&rival),
        &[],
        None,
    );
    assert_eq!(st, 404);
    let (st, e) = submit(&svc, &rival, None, &body);
    assert_eq!(st, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no such upload"),
        "{e}"
    );
    let (done, seen) = follow_progress(&svc, &key, &id, Duration::from_secs(180));
    assert_eq!(done["status"], "succeeded", "{done}\n{}", svc.log());
    assert_eq!(done["progress"], 1.0);
    // It moved with the render's stages, never back.
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let between = seen.iter().filter(|p| **p > 0.05 && **p < 1.0).count();
    assert!(between >= 3, "progress seen: {seen:?}");
    contract.check("Job", &done);
    check_masters(&svc, &done);
    let (_, page) = call("GET", &svc.url("/v1/jobs"), Some(&key), &[], None);
    contract.check("JobPage", &page);
    let (_, targets) = call("GET", &svc.url("/v1/targets"), Some(&key), &[], None);
    contract.check("Targets", &targets);
    contract.check("WebhookCreated", &hook);
    let went = events.statuses_until(&id, "succeeded", Duration::from_secs(30));
    assert_eq!(went, ["queued", "running", "succeeded"]);
    webhook_said_so(&svc, &key, &receiver, &hook, &id);
    cancel_and_list(&svc, &key, &rival, &up, &id);
    events_are_the_tenants(&events, &rival_events, &[id]);
}

/// The endpoint was told the job succeeded, in a message it can verify (the
/// Standard Webhooks signature checked here from its definition), after one
/// failed attempt that was retried; both attempts are listed.
fn webhook_said_so(svc: &Service, key: &str, receiver: &Receiver, hook: &Value, id: &str) {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::STANDARD;
    let t = Instant::now();
    let (headers, body) = loop {
        let reqs = receiver.requests();
        let found = reqs
            .iter()
            .skip(1)
            .find(|(_, b)| b.contains(id) && b.contains("job.succeeded"));
        if let Some(r) = found {
            break r.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no retried webhook: {reqs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let secret = hook["secret"]
        .as_str()
        .unwrap()
        .strip_prefix("whsec_")
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&b64.decode(secret).unwrap()).unwrap();
    mac.update(format!("{}.{}.{}", h("webhook-id"), h("webhook-timestamp"), body).as_bytes());
    let want = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    assert_eq!(h("webhook-signature"), want, "signature");
    let sent: i64 = h("webhook-timestamp").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - sent).abs() < 60);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["data"]["job_id"].as_str()),
        (Some("job.succeeded"), Some(id))
    );
    // The first POST (a 500) and its retry carry the same message id.
    let first = &receiver.requests()[0];
    assert_eq!(
        first.0.iter().find(|(k, _)| k == "webhook-id").unwrap().1,
        h("webhook-id")
    );
    let url = svc.url(&format!(
        "/v1/webhooks/{}/deliveries",
        hook["id"].as_str().unwrap()
    ));
    // The endpoint has the message before the service records the attempt.
    let t = Instant::now();
    loop {
        let (st, d) = call("GET", &url, Some(key), &[], None);
        assert_eq!(st, 200, "{d}");
        let codes: Vec<i64> = d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["status_code"].as_i64())
            .collect();
        if codes.len() == 2 || t.elapsed() > Duration::from_secs(10) {
            assert_eq!(codes, [204, 500], "newest first: {d}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A job cancelled as it is submitted never becomes `succeeded`; the list
/// pages by cursor and filters by status, per tenant.
fn cancel_and_list(svc: &Service, key: &str, rival: &str, up: &str, first: &str) {
    let (_, b) = submit(svc, key, None, &job_body(up, &["youtube"]));
    let b = b["id"].as_str().unwrap().to_string();
    let (st, c) = call(
        "POST",
        &svc.url(&format!("/v1/jobs/{b}/cancel")),
        Some(key),
        &[],
        None,
    );
    assert_eq!((st, c["status"].as_str()), (200, Some("cancelled")), "{c}");
    // One worker takes jobs in order: once a later job is done, the
    // cancelled one has been settled, whatever it was doing.
    let (_, c) = submit(svc, key, None, &job_body(up, &["ebu-r128"]));
    let c = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_final(svc, key, &c, Duration::from_secs(180))["status"],
        "succeeded"
    );
    let b_now = get_job(svc, key, &b);
    assert_eq!(b_now["status"], "cancelled", "{b_now}");
    assert!(
        b_now.get("targets").is_none(),
        "a cancelled job shows masters: {b_now}"
    );
    let (st, again) = call(
        "POST",
        &svc.url(&format!("/v1/jobs/{c}/cancel")),
        Some(key),
        &[],
        None,
    );
    assert_eq!(st, 409, "{again}");
    // Paging: one at a time, in submission order.
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let q = if next.is_empty() {
            "/v1/jobs?limit=1".to_string()
        } else {
            format!("/v1/jobs?limit=1&cursor={next}")
        };
        let (st, page) = call("GET", &svc.url(&q), Some(key), &[], None);
        assert_eq!(st, 200, "{page}");
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(n) => next = n.to_string(),
            None => break,
        }
        assert!(seen.len() <= 3, "{seen:?}");
    }
    assert_eq!(seen, vec![first.to_string(), b.clone(), c]);
    let (_, page) = call(
        "GET",
        &svc.url("/v1/jobs?status=cancelled"),
        Some(key),
        &[],
        None,
    );
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["id"], b.as_str());
    let (_, page) = call("GET", &svc.url("/v1/jobs"), Some(rival), &[], None);
    assert_eq!(page["jobs"], json!([]));
}

/// Each tenant's event stream holds its own jobs only.
fn events_are_the_tenants(events: &Events, rival: &Events, ids: &[String]) {
    let ours: Vec<String> = events
        .all()
        .iter()
        .filter_map(|e| e["job_id"].as_str().map(String::from))
        .collect();
    assert!(ids.iter().all(|id| ours.contains(id)), "{ours:?}");
    assert!(rival.all().is_empty(), "a rival saw {:?}", rival.all());
}

#[test]
fn a_backend_masters_a_track_over_http_sqlite() {
    masters_a_track_over_http(Database::Sqlite, &[]);
}

#[test]
fn a_backend_masters_a_track_over_http_postgres() {
    masters_a_track_over_http(Database::Postgres, &[]);
}

/// The same session against the distributed shape: PostgreSQL, jobs
/// through the outbox to the real RabbitMQ, rendered by a `loopmind
/// worker` from the real Garage, uploads and downloads by presigned URLs.
#[test]
fn a_backend_masters_a_track_over_http_distributed() {
    let mut cluster = Cluster::new("svc", &[]);
    cluster.spawn_worker();
    masters_a_track_over_http(Database::Postgres, &queue_shaped(&cluster));
}

/// Every refusal with its status, and none leaves a trace: no job made.
#[test]
fn refused_requests_say_why_and_change_nothing() {
    let svc = Service::start(
        Database::Sqlite,
        &[
            ("LOOPMIND_SERVICE__UPLOAD_MAX_BYTES", "200000"),
            ("LOOPMIND_SERVICE__BODY_MAX_KIB", "2"),
        ],
    );
    let key = svc.key("acme", None, "submit,read");
    let reader = svc.key("auditor", Some("acme"), "read");
    let writer = svc.key("robot", Some("acme"), "submit");
    let jobs = svc.url("/v1/jobs");
    assert_eq!(call("GET", &jobs, None, &[], None).0, 401);
    assert_eq!(call("GET", &jobs, Some("lm_not-a-key"), &[], None).0, 401);
    assert_eq!(
        call("POST", &svc.url("/v1/uploads"), Some(&reader), &[], None).0,
        403
    );
    assert_eq!(call("GET", &jobs, Some(&writer), &[], None).0, 403);
    assert_eq!(call("GET", &svc.url("/healthz"), None, &[], None).0, 200);
    // Too large: 413, and the URL stays good for a body that fits.
    let (_, up) = call("POST", &svc.url("/v1/uploads"), Some(&key), &[], None);
    let url = up["url"].as_str().unwrap();
    let big = svc.data.path().join("big.wav");
    write_wav(&big, &short_song(44_100), 24, false);
    let len = std::fs::metadata(&big).unwrap().len() as usize;
    assert!(len > 200_000);
    assert_eq!(
        put_expecting(url, len),
        (413, false),
        "refused before the body"
    );
    // No length said: cut off as it streams past the limit.
    assert_eq!(
        put_chunked(url, 400_000),
        413,
        "a chunked body past the limit"
    );
    let id = up["id"].as_str().unwrap();
    let (st, e) = submit(&svc, &key, None, &job_body(id, &["spotify"]));
    assert_eq!(st, 422, "nothing uploaded yet: {e}");
    let small = svc.data.path().join("small.wav");
    let mut a = short_song(8_000);
    a.channels.iter_mut().for_each(|c| c.truncate(8_000));
    write_wav(&small, &a, 16, false);
    assert_eq!(put_file(url, &small).0, 200);
    let forged = url.replace("sig=", "sig=00");
    // Refused before the body (a client sending it anyway may find the
    // connection closed under it: asked with 100-continue here).
    let len = std::fs::metadata(&small).unwrap().len() as usize;
    assert_eq!(put_expecting(&forged, len), (403, false));
    for (body, want, says) in [
        ("{not json".to_string(), 400, "not JSON"),
        (json!({"input": {"upload_id": id}, "targets": ["spotify"], "colour": 1}).to_string(), 400, "colour"),
        (json!({"targets": ["spotify"]}).to_string(), 400, "input"),
        (job_body(id, &["spotifyy"]), 422, "spotifyy"),
        (json!({"input": {"upload_id": id}, "targets": ["spotify"], "dynamics": 3}).to_string(), 422, "dynamics"),
        (json!({"input": {"upload_id": id}, "targets": ["spotify"], "reference": "uploads/rival/x"}).to_string(), 422, "reference"),
        (json!({"input": {"url": "s3://bucket/elsewhere.wav"}, "targets": ["spotify"]}).to_string(), 422, "input.url"),
        (json!({"input": {"upload_id": id}, "targets": ["spotify"], "album": {"name": "A"}}).to_string(), 422, "POST /v1/batches"),
    ] {
        let (st, e) = submit(&svc, &key, Some("k"), &body);
        assert_eq!(st, want, "{body}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{body}: {e}");
        assert_eq!(e["error"]["retryable"], false);
    }
    // Webhooks: loopback refused (service.webhooks_allow_private is off),
    // unknown event types named.
    for (hook, says) in [
        (
            json!({"url": "http://127.0.0.1:9/hook"}),
            "private or loopback",
        ),
        (json!({"url": "ftp://hooks.example/x"}), "http"),
        (
            json!({"url": "http://127.0.0.1:9/hook", "events": ["job.done"]}),
            "job.done",
        ),
    ] {
        let (st, e) = call(
            "POST",
            &svc.url("/v1/webhooks"),
            Some(&key),
            &[],
            Some(&hook.to_string()),
        );
        assert_eq!(st, 422, "{hook}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{hook}: {e}"
        );
    }
    let huge =
        job_body(id, &["spotify"]).replace('{', &format!("{{\"pad\": \"{}\", ", "x".repeat(4096)));
    assert_eq!(submit(&svc, &key, None, &huge).0, 413);
    let (_, page) = call("GET", &jobs, Some(&key), &[], None);
    assert_eq!(page["jobs"], json!([]), "a refused request made a job");
    // The key "k" was never used by a refused request: it makes a job now.
    assert_eq!(
        submit(&svc, &key, Some("k"), &job_body(id, &["spotify"])).0,
        201
    );
}

/// A batch's body: `n` tracks of one upload, Spotify for all.
fn batch_body(up: &str, n: usize) -> Value {
    let tracks: Vec<Value> = (1..=n)
        .map(|i| json!({"id": format!("t{i:02}"), "input": {"upload_id": up}}))
        .collect();
    json!({"targets": ["spotify"], "mode": "cinematic", "tracks": tracks})
}

fn submit_batch(svc: &Service, key: &str, idem: &str, body: &Value) -> (u16, Value) {
    let headers = [("Idempotency-Key", idem)];
    let body = body.to_string();
    call(
        "POST",
        &svc.url("/v1/batches"),
        Some(key),
        &headers,
        Some(&body),
    )
}

fn get_batch(svc: &Service, key: &str, id: &str) -> (u16, Value) {
    call(
        "GET",
        &svc.url(&format!("/v1/batches/{id}")),
        Some(key),
        &[],
        None,
    )
}

/// Every job of the tenant, all pages (`query` adds filters).
fn all_jobs(svc: &Service, key: &str, query: &str) -> Vec<Value> {
    let (mut out, mut next) = (Vec::new(), String::new());
    loop {
        let q = format!("/v1/jobs?limit=7{query}{next}");
        let (st, page) = call("GET", &svc.url(&q), Some(key), &[], None);
        assert_eq!(st, 200, "{page}");
        out.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(n) => next = format!("&cursor={n}"),
            None => return out,
        }
    }
}

/// `kill -9` of `serve` during a 20-track batch, then a restart: all 20
/// succeed, none is lost, and every master is the one bit-identical master
/// of that mix and request (a job run twice wrote the same bits). The
/// batch's jobs.
fn batch_survives_serve_killed(svc: &mut Service) -> Vec<Value> {
    let key = svc.key("acme", None, "submit,read");
    let up = upload(svc, &key, "mix");
    let body = batch_body(&up, 20);
    let (st, batch) = submit_batch(svc, &key, "catalog-1", &body);
    assert_eq!(st, 201, "{batch}");
    let id = batch["id"].as_str().unwrap().to_string();
    assert_eq!(batch["jobs"].as_array().unwrap().len(), 20, "{batch}");
    let t = Instant::now();
    loop {
        let (_, b) = get_batch(svc, &key, &id);
        if b["counts"]["succeeded"].as_i64() >= Some(2)
            && b["counts"]["running"].as_i64() >= Some(1)
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{b}\n{}", svc.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    svc.kill9();
    svc.restart();
    // The key still names the batch after the restart: no second batch.
    let (st, again) = submit_batch(svc, &key, "catalog-1", &body);
    assert_eq!(
        (st, again["id"].as_str()),
        (200, Some(id.as_str())),
        "{again}"
    );
    let t = Instant::now();
    let done = loop {
        let (_, b) = get_batch(svc, &key, &id);
        if b["finished"] == true {
            break b;
        }
        assert!(t.elapsed() < Duration::from_secs(400), "{b}\n{}", svc.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done["counts"]["succeeded"], 20, "{done}\n{}", svc.log());
    let jobs = all_jobs(svc, &key, "");
    assert_eq!(jobs.len(), 20, "jobs made: {}", jobs.len());
    let mut tracks: Vec<&str> = jobs.iter().map(|j| j["track"].as_str().unwrap()).collect();
    tracks.dedup();
    assert_eq!(tracks.len(), 20, "{tracks:?}");
    let mut sums = std::collections::BTreeSet::new();
    for j in &jobs {
        let f = j["targets"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "spotify.wav")
            .unwrap_or_else(|| panic!("no spotify.wav: {j}"));
        let to = svc.data.path().join("m.wav");
        download(f["url"].as_str().unwrap(), &to);
        sums.insert(std::fs::read(&to).unwrap());
    }
    assert_eq!(sums.len(), 1, "the 20 masters of one mix differ");
    jobs
}

/// Embedded: the render children die with `serve`; the jobs they had are
/// queued again at the restart, each output folder written once more at
/// most.
#[test]
fn serve_killed_during_a_batch_loses_nothing_and_duplicates_nothing() {
    let mut svc = Service::start(Database::Sqlite, &[("LOOPMIND_SERVICE__WORKERS", "2")]);
    batch_survives_serve_killed(&mut svc);
    let masters = svc.data.path().join("data/store/masters/api.acme");
    let folders = std::fs::read_dir(&masters).unwrap().count();
    assert_eq!(folders, 20, "output folders in {}", masters.display());
    let requeued = svc.log().lines().any(|l| {
        let e: Value = serde_json::from_str(l).unwrap_or_default();
        e["message"] == "jobs that were running when the service stopped are queued again"
            && e["jobs"].as_i64() >= Some(1)
    });
    assert!(requeued, "no job in hand was queued again:\n{}", svc.log());
}

/// Distributed: the workers carry on while `serve` is away; what they said
/// meanwhile waits in the queue and is recorded once it is back.
#[test]
fn serve_killed_during_a_distributed_batch_loses_nothing() {
    let mut cluster = Cluster::new("killed", &[]);
    cluster.spawn_worker();
    cluster.spawn_worker();
    let shape = queue_shaped(&cluster);
    let mut svc = Service::start(Database::Postgres, &pairs(&shape));
    batch_survives_serve_killed(&mut svc);
}

/// Two `serve` replicas on one PostgreSQL, jobs through the queue: a batch
/// submitted to one is listed, followed (SSE) and cancelled through the
/// other; the cancelled jobs a worker had not taken are never rendered.
#[test]
fn two_replicas_share_one_database() {
    let mut cluster = Cluster::new("replicas", &[]);
    let a = Service::start(Database::Postgres, &pairs(&queue_shaped(&cluster)));
    let b = a.replica();
    let key = a.key("acme", None, "submit,read");
    let up = upload(&a, &key, "mix");
    let events = Events::follow(&b.base, &key);
    let body = batch_body(&up, 6);
    let (st, batch) = submit_batch(&a, &key, "catalog-2", &body);
    assert_eq!(st, 201, "{batch}");
    let id = batch["id"].as_str().unwrap();
    let (st, again) = submit_batch(&b, &key, "catalog-2", &body);
    assert_eq!((st, again["id"].as_str()), (200, Some(id)), "{again}");
    let listed = all_jobs(&b, &key, &format!("&batch={id}"));
    assert_eq!(listed.len(), 6);
    cluster.spawn_worker();
    let t = Instant::now();
    while get_batch(&b, &key, id).1["counts"]["succeeded"].as_i64() < Some(1) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{}\n{}",
            a.log(),
            cluster.log(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, c) = call(
        "POST",
        &b.url(&format!("/v1/batches/{id}/cancel")),
        Some(&key),
        &[],
        None,
    );
    assert_eq!((st, &c["finished"]), (200, &json!(true)), "{c}");
    let succeeded = c["counts"]["succeeded"].as_i64().unwrap();
    assert_eq!(
        c["counts"]["cancelled"].as_i64().unwrap() + succeeded,
        6,
        "{c}"
    );
    // Each job's story as B streamed it: queued first, then how it ended.
    for j in &listed {
        let jid = j["id"].as_str().unwrap();
        let now = get_job(&a, &key, jid)["status"]
            .as_str()
            .unwrap()
            .to_string();
        let went = events.statuses_until(jid, &now, Duration::from_secs(30));
        assert_eq!(
            went.first().map(String::as_str),
            Some("queued"),
            "{jid}: {went:?}"
        );
    }
    // Let the worker take what is left in the queue: whatever it finds
    // cancelled it drops, and nothing turns back.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get_batch(&a, &key, id).1["counts"], c["counts"]);
    let rt = common::services::runtime();
    let store = rt.block_on(common::services::garage_store(&cluster.env));
    let rendered = listed
        .iter()
        .filter(|j| {
            let k = format!("masters/api.acme/{}/report.json", j["id"].as_str().unwrap());
            rt.block_on(loopmind_worker::store::ObjectStore::head(&store, &k))
                .unwrap()
                .is_some()
        })
        .count() as i64;
    // The one in the worker's hands when the cancel came may have finished.
    assert!(
        rendered <= succeeded + 1,
        "{rendered} rendered, {succeeded} succeeded"
    );
}

/// A reference track is an upload of the tenant's own: the master takes
/// on its tonal balance (master_settings.json says how far it moved); a
/// store key, or another tenant's upload, is refused.
#[test]
fn a_job_takes_its_reference_as_an_upload() {
    let svc = Service::start(Database::Sqlite, &[]);
    let key = svc.key("acme", None, "submit,read");
    let rival = svc.key("rival", None, "submit,read");
    let up = upload(&svc, &key, "mix");
    let reference = upload(&svc, &key, "reference");
    let theirs = upload(&svc, &rival, "theirs");
    let with = |r: Value| {
        json!({"input": {"upload_id": up}, "targets": ["spotify"], "reference": r}).to_string()
    };
    let (st, e) = submit(&svc, &key, None, &with(json!("uploads/rival/x")));
    assert_eq!(st, 422, "{e}");
    let (st, e) = submit(&svc, &key, None, &with(json!({"upload_id": theirs})));
    assert_eq!(st, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("reference.upload_id"),
        "{e}"
    );
    let (st, job) = submit(&svc, &key, None, &with(json!({"upload_id": reference})));
    assert_eq!(st, 201, "{job}");
    let done = wait_final(
        &svc,
        &key,
        job["id"].as_str().unwrap(),
        Duration::from_secs(180),
    );
    assert_eq!(done["status"], "succeeded", "{done}\n{}", svc.log());
    let f = done["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "master_settings.json")
        .unwrap();
    let to = svc.data.path().join("settings.json");
    download(f["url"].as_str().unwrap(), &to);
    let settings: Value = serde_json::from_slice(&std::fs::read(&to).unwrap()).unwrap();
    assert!(
        settings["reference"]["distance_before_db"].is_number(),
        "{}",
        settings["reference"]
    );
}

/// A tenant with an input prefix names its mix by URL inside it (the
/// store's bucket); anything outside it, a key that climbs out, or a tenant
/// without a prefix is refused and makes no job.
#[test]
fn a_tenant_names_its_mix_inside_its_own_prefix() {
    let mut cluster = Cluster::new("prefix", &[]);
    let bucket = cluster
        .env
        .iter()
        .find(|(k, _)| k == "LOOPMIND_STORE__BUCKET")
        .map(|(_, v)| v.clone())
        .unwrap();
    let mut shape = queue_shaped(&cluster);
    let prefix = format!("s3://{bucket}/labels/acme/");
    shape.push((
        "LOOPMIND_SERVICE__INPUT_PREFIXES__ACME".into(),
        prefix.clone(),
    ));
    let svc = Service::start(Database::Postgres, &pairs(&shape));
    let key = svc.key("acme", None, "submit,read");
    let rival = svc.key("rival", None, "submit,read");
    let mix = svc.data.path().join("mix.wav");
    write_wav(&mix, &short_song(44_100), 24, false);
    let rt = common::services::runtime();
    let store = rt.block_on(common::services::garage_store(&cluster.env));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for k in [
        format!("labels/acme/{nanos}.wav"),
        format!("labels/other/{nanos}.wav"),
    ] {
        rt.block_on(loopmind_worker::store::ObjectStore::put_file(
            &store, &k, &mix,
        ))
        .unwrap();
    }
    let body = |url: String| json!({"input": {"url": url}, "targets": ["spotify"]}).to_string();
    for (who, url, says) in [
        (
            &key,
            format!("s3://{bucket}/labels/other/{nanos}.wav"),
            "outside this tenant's prefix",
        ),
        (
            &key,
            format!("{prefix}../other/{nanos}.wav"),
            "not a plain key",
        ),
        (&key, format!("{prefix}missing.wav"), "no such object"),
        (
            &rival,
            format!("{prefix}{nanos}.wav"),
            "no input prefix is set for tenant 'rival'",
        ),
    ] {
        let (st, e) = submit(&svc, who, None, &body(url));
        assert_eq!(st, 422, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{e}"
        );
    }
    let (_, page) = call("GET", &svc.url("/v1/jobs"), Some(&key), &[], None);
    assert_eq!(page["jobs"], json!([]), "a refused job was made");
    cluster.spawn_worker();
    let (st, job) = submit(&svc, &key, None, &body(format!("{prefix}{nanos}.wav")));
    assert_eq!(st, 201, "{job}");
    let done = wait_final(
        &svc,
        &key,
        job["id"].as_str().unwrap(),
        Duration::from_secs(180),
    );
    assert_eq!(done["status"], "succeeded", "{done}\n{}", svc.log());
    check_masters(&svc, &done);
}

/// Embedded, one `serve` renders a database's jobs (it queues again, at
/// start, the jobs left running): a second one on the same SQLite folder or
/// the same PostgreSQL database is refused, saying what to do instead.
#[test]
fn one_embedded_renderer_per_database() {
    for (db, same_data) in [(Database::Sqlite, true), (Database::Postgres, false)] {
        let svc = Service::start(db, &[]);
        let err = svc
            .serve_beside(same_data)
            .unwrap_or_else(|| panic!("{db:?}: a second embedded serve ran"));
        assert!(
            err.contains("several replicas need service.render"),
            "{db:?}: {err}"
        );
    }
}

/// A catalog as one batch: shared options under each track's own, one
/// transaction (a refused batch makes no job), idempotent, listed by batch,
/// counted, cancelled as a whole, and another tenant's 404.
#[test]
fn a_catalog_is_one_batch() {
    let svc = Service::start(
        Database::Sqlite,
        &[
            ("LOOPMIND_SERVICE__WORKERS", "1"),
            ("LOOPMIND_SERVICE__BATCH_MAX_TRACKS", "5"),
        ],
    );
    let key = svc.key("acme", None, "submit,read");
    let rival = svc.key("rival", None, "submit,read");
    let up = upload(&svc, &key, "mix");
    let refused = |body: &Value, status: u16, says: &str| {
        let (st, e) = submit_batch(&svc, &key, "refused", body);
        assert_eq!(st, status, "{e}");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.contains(says), "{m}");
    };
    let mut bad = batch_body(&up, 3);
    bad["tracks"][1]["targets"] = json!(["spotify", "nowhere-fm"]);
    refused(
        &bad,
        422,
        "tracks[1] 't02': targets: unknown target 'nowhere-fm'",
    );
    let mut bad = batch_body(&up, 3);
    bad["tracks"][2]["input"]["upload_id"] = json!("upl_missing");
    refused(
        &bad,
        422,
        "track 't03': input.upload_id 'upl_missing': no such upload",
    );
    let mut bad = batch_body(&up, 3);
    bad["tracks"][2]["id"] = json!("t01");
    refused(&bad, 422, "'t01' is given twice");
    refused(&batch_body(&up, 6), 422, "service.batch_max_tracks");
    let mut bad = batch_body(&up, 2);
    bad["album"] = json!({"name": " "});
    refused(&bad, 422, "tracks[0] 't01': album.name");
    bad["album"] = json!("A");
    refused(&bad, 400, "album: must be {\"name\": ...}");
    bad["album"] = json!({"name": "A", "gain": 3});
    refused(&bad, 400, "album: unknown field `gain`");
    let mut bad = batch_body(&up, 2);
    bad["tracks"][0]["loudnes"] = json!(-9);
    refused(&bad, 400, "loudnes");
    assert!(
        all_jobs(&svc, &key, "").is_empty(),
        "a refused batch made jobs"
    );

    let mut body = batch_body(&up, 4);
    body["tracks"][1]["targets"] = json!(["apple-music"]);
    let (st, batch) = submit_batch(&svc, &key, "catalog-7", &body);
    assert_eq!(st, 201, "{batch}");
    let contract = Contract::fetch(&svc);
    contract.check("Batch", &batch);
    let id = batch["id"].as_str().unwrap();
    assert_eq!(batch["tracks"], 4);
    let (st, again) = submit_batch(&svc, &key, "catalog-7", &body);
    assert_eq!((st, again["id"].as_str()), (200, Some(id)), "{again}");
    body["mode"] = json!("transparent");
    let (st, e) = submit_batch(&svc, &key, "catalog-7", &body);
    assert_eq!(st, 409, "{e}");
    let listed = all_jobs(&svc, &key, &format!("&batch={id}"));
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|j| j["batch"] == id));
    let t02 = listed.iter().find(|j| j["track"] == "t02").unwrap();
    assert_eq!(t02["request"]["targets"][0]["name"], "apple-music", "{t02}");
    assert_eq!(t02["request"]["mode"], "cinematic", "{t02}");
    assert_eq!(get_batch(&svc, &rival, id).0, 404);
    let cancel = format!("/v1/batches/{id}/cancel");
    assert_eq!(
        call("POST", &svc.url(&cancel), Some(&rival), &[], None).0,
        404
    );
    assert_eq!(get_batch(&svc, &key, id).1["finished"], false);
    let (st, c) = call("POST", &svc.url(&cancel), Some(&key), &[], None);
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["finished"], true, "{c}");
    let cancelled = c["counts"]["cancelled"].as_i64().unwrap();
    assert!(cancelled >= 3, "{c}");
    assert_eq!(
        cancelled + c["counts"]["succeeded"].as_i64().unwrap(),
        4,
        "{c}"
    );
    assert!(all_jobs(&svc, &rival, "").is_empty());
    // The admin's view counts every tenant's jobs from the database.
    let admin = svc.key("ops", Some("ops"), "admin");
    assert_eq!(get_text(&svc.url("/metrics"), Some(&key)).0, 403);
    let (st, _, text) = get_text(&svc.url("/metrics"), Some(&admin));
    assert_eq!(st, 200, "{text}");
    let line = format!("loopmind_service_jobs{{state=\"cancelled\"}} {cancelled}");
    assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

/// A mix of the short song at `gain_db`, uploaded for `key`.
fn upload_at(svc: &Service, key: &str, name: &str, gain_db: f32) -> String {
    let mut song = short_song(44_100);
    let g = 10f32.powf(gain_db / 20.0);
    song.channels.iter_mut().flatten().for_each(|x| *x *= g);
    let mix = svc.data.path().join(format!("{name}.wav"));
    write_wav(&mix, &song, 24, false);
    let (st, up) = call("POST", &svc.url("/v1/uploads"), Some(key), &[], None);
    assert_eq!(st, 201, "{up}");
    assert_eq!(put_file(up["url"].as_str().unwrap(), &mix).0, 200);
    up["id"].as_str().unwrap().to_string()
}

/// Album normalisation in a batch: three album tracks 5 and 11 dB apart
/// keep those distances on every target (measured by ffmpeg) while the
/// album as a whole lands on the target; a member that cannot be decoded
/// fails alone and the rest of its album still renders; a track that
/// opts out (`"album": null`) is mastered on its own. Each album track
/// shows its two passes in its events.
fn an_album_keeps_its_tracks_relative_levels(svc: &Service) {
    let key = svc.key("acme", None, "submit,read");
    let gains = [("loud", 0.0), ("mid", -5.0), ("quiet", -11.0)];
    let mut tracks: Vec<Value> = gains
        .iter()
        .map(
            |(name, g)| json!({"id": name, "input": {"upload_id": upload_at(svc, &key, name, *g)}}),
        )
        .collect();
    let broken = svc.data.path().join("broken.wav");
    std::fs::write(&broken, b"RIFF\x10\0\0\0WAVEnot audio at all").unwrap();
    let (_, up) = call("POST", &svc.url("/v1/uploads"), Some(&key), &[], None);
    assert_eq!(put_file(up["url"].as_str().unwrap(), &broken).0, 200);
    tracks.push(json!({"id": "broken", "input": {"upload_id": up["id"]}}));
    let single = upload_at(svc, &key, "single", -8.0);
    tracks.push(json!({"id": "single", "input": {"upload_id": single}, "album": null}));
    let body = json!({"targets": ["spotify", "apple-music"], "mode": "transparent",
        "album": {"name": "Night Drive"}, "tracks": tracks});
    let events = Events::follow(&svc.base, &key);
    let (st, batch) = submit_batch(svc, &key, "album-1", &body);
    assert_eq!(st, 201, "{batch}");
    let ids: Vec<(String, String)> = batch["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["track"].as_str().unwrap().into(),
                j["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let id_of = |t: &str| ids.iter().find(|(n, _)| n == t).unwrap().1.clone();
    let job = |t: &str| wait_final(svc, &key, &id_of(t), Duration::from_secs(300));
    let failed = job("broken");
    assert_eq!(failed["status"], "failed", "{failed}");
    let alone = job("single");
    assert_eq!(alone["status"], "succeeded", "{alone}");
    assert!(alone.get("album").is_none(), "{alone}");
    check_masters(svc, &alone);
    let contract = Contract::fetch(svc);
    let mut offsets = Vec::new();
    let mut masters: Vec<Vec<f64>> = Vec::new();
    for (name, _) in gains {
        let j = job(name);
        assert_eq!(j["status"], "succeeded", "{name}: {j}");
        contract.check("Job", &j);
        assert_eq!(j["album"]["name"], "Night Drive", "{j}");
        assert_eq!(j["album"]["stage"], "render", "{j}");
        let offset = j["album"]["lufs_offset"].as_f64().unwrap();
        offsets.push(offset);
        // Each target moved by the offset, and the master on it.
        check_masters(svc, &j);
        let mut lufs = Vec::new();
        for t in j["targets"].as_array().unwrap() {
            let base = if t["target"] == "spotify" {
                -14.0
            } else {
                -16.0
            };
            let want = t["target_lufs"].as_f64().unwrap();
            assert!((want - (base + offset)).abs() < 1e-6, "{name}: {t}");
            lufs.push(t["integrated_lufs"].as_f64().unwrap());
        }
        masters.push(lufs);
        let statuses = events.statuses_until(&id_of(name), "succeeded", Duration::from_secs(60));
        assert_eq!(
            statuses,
            ["queued", "running", "queued", "running", "succeeded"],
            "{name}: measured, waited for its album, rendered"
        );
    }
    // The inputs' distances, kept by the offsets and by the masters.
    for (i, want) in [(1, 5.0), (2, 11.0)] {
        let d = offsets[0] - offsets[i];
        assert!((d - want).abs() < 0.05, "offsets {offsets:?}");
        for t in 0..2 {
            let d = masters[0][t] - masters[i][t];
            assert!((d - want).abs() < 0.25, "masters {masters:?}");
        }
    }
    // The three together (equal lengths: their mean power) on the target.
    for (t, base) in [(0, -14.0), (1, -16.0)] {
        let power: f64 = masters.iter().map(|m| 10f64.powf(m[t] / 10.0)).sum::<f64>() / 3.0;
        let album = 10.0 * power.log10();
        assert!(
            (album - base).abs() < 0.15,
            "album at {album} LUFS, target {base}"
        );
    }
    let (_, b) = get_batch(svc, &key, batch["id"].as_str().unwrap());
    assert_eq!(
        (
            b["counts"]["succeeded"].as_i64(),
            b["counts"]["failed"].as_i64()
        ),
        (Some(4), Some(1)),
        "{b}"
    );
}

#[test]
fn an_album_in_a_batch_keeps_its_levels() {
    let svc = Service::start(Database::Sqlite, &[("LOOPMIND_SERVICE__WORKERS", "2")]);
    an_album_keeps_its_tracks_relative_levels(&svc);
}

#[test]
fn an_album_in_a_distributed_batch_keeps_its_levels() {
    let mut cluster = Cluster::new("album", &[]);
    cluster.spawn_worker();
    let svc = Service::start(Database::Postgres, &pairs(&queue_shaped(&cluster)));
    an_album_keeps_its_tracks_relative_levels(&svc);
}

/// A key past its rate is told to wait (429, Retry-After), and what it
/// asked is not done; another key is not held back by it.
#[test]
fn a_key_past_its_rate_is_told_to_wait() {
    let svc = Service::start(
        Database::Sqlite,
        &[
            ("LOOPMIND_SERVICE__RATE_PER_S", "1"),
            ("LOOPMIND_SERVICE__RATE_BURST", "3"),
        ],
    );
    let key = svc.key("acme", None, "submit,read");
    let other = svc.key("other", Some("acme"), "submit,read");
    let up = upload(&svc, &key, "mix");
    // A full burst again, then spent at once.
    std::thread::sleep(Duration::from_millis(3100));
    for _ in 0..3 {
        assert_eq!(
            call("GET", &svc.url("/v1/jobs"), Some(&key), &[], None).0,
            200
        );
    }
    let (st, e) = submit(&svc, &key, None, &job_body(&up, &["spotify"]));
    assert_eq!(st, 429, "{e}");
    assert_eq!(e["error"]["retryable"], true, "{e}");
    let (st, retry, _) = get_text(&svc.url("/v1/jobs"), Some(&key));
    assert_eq!((st, retry.as_deref()), (429, Some("1")));
    assert_eq!(
        call("GET", &svc.url("/v1/targets"), Some(&other), &[], None).0,
        200
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (st, page) = call("GET", &svc.url("/v1/jobs"), Some(&key), &[], None);
    assert_eq!(
        (st, &page["jobs"]),
        (200, &json!([])),
        "the refused job was made"
    );
}

/// docs/api.md's curl session, run as written against a real `serve`.
#[test]
fn the_documented_curl_session_works() {
    let doc = std::fs::read_to_string(common::services::repo().join("docs/api.md")).unwrap();
    let script = doc
        .split("```bash\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/api.md holds a bash block");
    let svc = Service::start(Database::Sqlite, &[]);
    let key = svc.key("acme", None, "submit,read");
    let mix = svc.data.path().join("mix.wav");
    write_wav(&mix, &short_song(44_100), 24, false);
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd.path())
        .env("BASE", &svc.base)
        .env("KEY", &key)
        .env("MIX", &mix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().last(), Some("succeeded"), "{stdout}");
    assert!(stdout.contains("spotify: -14"), "{stdout}");
    for (f, want) in [("spotify.wav", -14.0), ("apple-music.wav", -16.0)] {
        let (lufs, peak) = ffmpeg_meter(&cwd.path().join(f));
        assert!(
            (lufs - want).abs() <= 0.1 && peak <= -1.0,
            "{f}: {lufs} LUFS, {peak} dBTP"
        );
    }
}

/// The contract describes every call docs/api.md lists, and nothing it
/// does not (the table's first column, as `METHOD path`).
#[test]
fn the_contract_and_the_docs_list_the_same_calls() {
    let svc = Service::start(Database::Sqlite, &[]);
    let served = Contract::fetch(&svc).operations();
    let doc = std::fs::read_to_string(common::services::repo().join("docs/api.md")).unwrap();
    let mut listed: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|c| c.contains(" /"))
        .map(|c| c.split('?').next().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(served, listed, "the contract's calls, then docs/api.md's");
}
