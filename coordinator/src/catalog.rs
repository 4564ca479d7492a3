//! `loopmind coordinator`: a catalog manifest, read and validated, run by
//! the [`runner`](crate::runner) on RabbitMQ against the configured store.

use crate::broker::RabbitQueue;
use crate::manifest::Manifest;
use crate::runner::{self, Catalog};
use anyhow::{Context, Result};
use loopmind_worker::config::Settings;
use loopmind_worker::store::files::{self, ReadCapped};
use loopmind_worker::store::{self, ObjectStore, StoreError};
use std::path::Path;

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
        refused: Vec::new(),
    };
    let mut queue = RabbitQueue::new(&settings);
    Ok(runner::run(&cat, store, &mut queue, &settings)
        .await?
        .all_ok)
}

async fn read_manifest(settings: &Settings, store: &dyn ObjectStore, at: &str) -> Result<Vec<u8>> {
    let max = settings
        .coordinator
        .max_manifest_mib
        .saturating_mul(1 << 20);
    let too_big = || {
        anyhow::anyhow!(
            "{at}: over the manifest limit of {} MiB (coordinator.max_manifest_mib)",
            settings.coordinator.max_manifest_mib
        )
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
        return match store.get_bytes(key, max).await {
            Err(StoreError::TooLarge { .. }) => Err(too_big()),
            read => read?.with_context(|| format!("{at}: no such object")),
        };
    }
    match files::read_capped(Path::new(at), max) {
        Err(ReadCapped::TooLarge { .. }) => Err(too_big()),
        read => read.with_context(|| format!("reading manifest {at}")),
    }
}
