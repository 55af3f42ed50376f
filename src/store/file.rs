//! Writing the key table file safely: one writer at a time (an exclusive lock on a sibling
//! `.lock` file), and every write is write-temp → fsync → rename → fsync-dir, so the proxy and
//! other readers only ever see the old file or the new one. A crash leaves at most a stray
//! temp file, which nothing reads. Every change is appended, under the same lock, to the key
//! event log beside the table (`<table>.events.jsonl`), which nothing rewrites.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::keys::file::{self, RawTable, Shape, TableError};
use crate::keys::Catalogue;
use crate::store::writer::LoggedEvent;

pub struct FileStore {
    path: PathBuf,
    /// What the proxy will accept, so the CLI never writes a table the proxy refuses.
    scopes: Catalogue,
}

/// Holds the writer lock; released on drop.
pub struct Locked<'a> {
    store: &'a FileStore,
    _lock: File,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>, scopes: Catalogue) -> FileStore {
        FileStore { path: path.into(), scopes }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "keys".into());
        self.path.with_file_name(format!(".{name}{suffix}"))
    }

    /// Blocks until no other writer holds the table.
    pub fn lock(&self) -> std::io::Result<Locked<'_>> {
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(self.sibling(".lock"))?;
        f.lock()?;
        Ok(Locked { store: self, _lock: f })
    }

    /// Reads and validates the whole table (a missing file is an empty table for the CLI, so
    /// the first `create` can make it).
    pub fn read(&self) -> Result<RawTable, TableError> {
        let err = |p: String| TableError { source: self.path.display().to_string(), problems: vec![p] };
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RawTable::default()),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        let raw = file::parse_raw(&text).map_err(err)?;
        // Validate as the proxy will, so the CLI never starts from a table the proxy refuses.
        if !text.trim().is_empty() {
            file::parse(&text, &self.path.display().to_string(), &self.scopes)?;
        }
        Ok(raw)
    }

    /// The key event log's path: beside the table, so it moves with it.
    pub fn events_path(&self) -> PathBuf {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "keys".into());
        self.path.with_file_name(format!("{name}.events.jsonl"))
    }

    /// Every logged event, oldest first (none before the first change).
    pub fn events(&self) -> anyhow::Result<Vec<LoggedEvent>> {
        let text = match fs::read_to_string(self.events_path()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(anyhow::Error::new(e).context(self.events_path().display().to_string())),
        };
        // A line cut short by a crash mid-append is skipped rather than hiding the rest.
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// The shape to write: the file's own, or for a new file its extension's (`.jsonl`).
    fn shape(&self) -> Shape {
        match fs::read_to_string(&self.path) {
            Ok(text) if !text.trim().is_empty() => file::shape_of(&text),
            _ => match self.path.extension().and_then(|e| e.to_str()) {
                Some("jsonl" | "ndjson") => Shape::JsonLines,
                _ => Shape::Yaml,
            },
        }
    }
}

impl Locked<'_> {
    /// Appends to the event log: opened append-only, one line per event, synced before the
    /// lock is released.
    pub fn append_events(&self, events: &[LoggedEvent]) -> anyhow::Result<()> {
        let mut text = String::new();
        for e in events {
            text.push_str(&serde_json::to_string(e)?);
            text.push('\n');
        }
        let path = self.store.events_path();
        let mut o = OpenOptions::new();
        o.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&path).map_err(|e| anyhow::Error::new(e).context(path.display().to_string()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }

    pub fn read(&self) -> Result<RawTable, TableError> {
        self.store.read()
    }

    /// Validates `table` as the proxy would, then replaces the file atomically.
    pub fn write(&self, table: &RawTable) -> anyhow::Result<()> {
        let text = file::render(table, self.store.shape())?;
        file::parse(&text, "new table", &self.store.scopes)?;
        let path = &self.store.path;
        let tmp = self.store.sibling(&format!(".tmp-{}", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        #[cfg(unix)]
        {
            // Keep the operator's permissions on the new file; a first table is owner-only.
            use std::os::unix::fs::PermissionsExt;
            let perms =
                fs::metadata(path).map(|m| m.permissions()).unwrap_or_else(|_| fs::Permissions::from_mode(0o600));
            fs::set_permissions(&tmp, perms)?;
        }
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
