//! `loopmind coordinator`: a catalog manifest, read and validated, run by
//! the [`runner`](crate::runner) on RabbitMQ against the configured store.

use crate::broker::RabbitQueue;
use crate::manifest::Manifest;
use crate::runner::{self, Catalog};
use anyhow::{Context, Result};
use loopmind_worker::config::Settings;
use loopmind_worker::store::{self, ObjectStore};
use std::path::Path;

/// Largest manifest read (about 200,000 tracks of typical entries).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

pub async fn run(settings: Settings, catalog: &str) -> Result<bool> {
    let store = store::open(&settings.store).await?;
    let bytes = read_manifest(&settings, store.as_ref(), catalog).await?;
    let manifest = Manifest::parse(&bytes)?;
    let planned = manifest.plan_all();
    let cat = Catalog {
        problems: planned.problems,
        name: manifest.catalog.clone(),
        tracks: planned.tracks,
        unplanned: planned.unplanned,
    };
    let mut queue = RabbitQueue::new(&settings);
    Ok(runner::run(&cat, store, &mut queue, &settings)
        .await?
        .all_ok)
}

async fn read_manifest(settings: &Settings, store: &dyn ObjectStore, at: &str) -> Result<Vec<u8>> {
    let too_big = |size: u64| {
        (size > MAX_MANIFEST_BYTES).then(|| {
            anyhow::anyhow!(
                "{at}: {} MiB is over the manifest limit of {} MiB",
                size >> 20,
                MAX_MANIFEST_BYTES >> 20
            )
        })
    };
    if let Some(rest) = at.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .with_context(|| format!("{at}: want s3://bucket/key"))?;
        let other;
        let store: &dyn ObjectStore = if bucket == settings.store.bucket {
            store
        } else {
            let mut s = settings.store.clone();
            s.bucket = bucket.into();
            other = loopmind_worker::s3::S3Store::new(&s).await?;
            &other
        };
        let meta = store
            .head(key)
            .await?
            .with_context(|| format!("{at}: no such object"))?;
        if let Some(e) = too_big(meta.size) {
            return Err(e);
        }
        return store
            .get_bytes(key)
            .await?
            .with_context(|| format!("{at}: no such object"));
    }
    let size = std::fs::metadata(at)
        .with_context(|| format!("reading manifest {at}"))?
        .len();
    if let Some(e) = too_big(size) {
        return Err(e);
    }
    std::fs::read(Path::new(at)).with_context(|| format!("reading manifest {at}"))
}
