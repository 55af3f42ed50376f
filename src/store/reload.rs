//! Keeps the live key table current: polls the file (cheap metadata stat; works with Kubernetes
//! Secret symlink swaps, where inotify on the file does not) and reloads on demand (SIGHUP).
//! A table is built and validated off the request path, then swapped in whole; on failure the
//! last good table keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::keys::{file, Catalogue, KeyTable};

pub type SharedTable = Arc<ArcSwap<KeyTable>>;

#[derive(Debug)]
pub enum ReloadEvent {
    Loaded {
        keys: usize,
        took: Duration,
    },
    Failed {
        error: String,
    },
    /// A lookup cache (`sync: cache`) is current with the store at `version`, having dropped
    /// `invalidated` entries (`None`: all of them).
    CacheSynced {
        version: i64,
        invalidated: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let md = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: md.modified().ok(),
        len: md.len(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&md),
    })
}

pub struct Reloader {
    pub path: PathBuf,
    pub table: SharedTable,
    pub interval: Duration,
    pub trigger: Arc<Notify>,
    /// The scopes a key may hold; a table with any other is refused like any invalid one.
    pub scopes: Catalogue,
}

impl Reloader {
    /// Runs until the task is dropped. `on_event` is told of every attempt (for logs and metrics).
    pub async fn run(self, on_event: impl Fn(ReloadEvent) + Send + 'static) {
        let mut last = fingerprint(&self.path);
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(self.interval) => false,
                _ = self.trigger.notified() => true,
            };
            let now = fingerprint(&self.path);
            if !forced && (now == last || now.is_none()) {
                continue;
            }
            // Let an in-place writer finish: read only once the file has stopped changing.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let settled = fingerprint(&self.path);
            if !forced && settled != now {
                continue;
            }
            last = settled;
            on_event(self.reload_now().await);
        }
    }

    pub async fn reload_now(&self) -> ReloadEvent {
        let (path, shared, scopes) = (self.path.clone(), Arc::clone(&self.table), self.scopes.clone());
        let started = std::time::Instant::now();
        let result = crate::background::run_idle(move || {
            let table = super::table_file::load(&path, &scopes)?;
            let keys = table.len();
            let old = shared.swap(Arc::new(table));
            let took = started.elapsed();
            retire(old);
            Ok::<_, file::TableError>((keys, took))
        })
        .await;
        match result {
            Ok(Ok((keys, took))) => ReloadEvent::Loaded { keys, took },
            Ok(Err(e)) => ReloadEvent::Failed { error: e.to_string() },
            Err(e) => ReloadEvent::Failed { error: format!("loader task failed: {e}") },
        }
    }
}

/// Frees a replaced table here, on the background thread: a million records take tens of
/// milliseconds to free, which must not land on whichever request drops the last reference.
/// Requests hold a snapshot only for their own duration, so the wait is short; it is bounded
/// in case one is stuck.
pub(crate) fn retire(old: Arc<KeyTable>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(old);
}
