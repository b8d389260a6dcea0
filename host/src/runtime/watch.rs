//! Watches the components directory and keeps the directory layer in step with it.
//!
//! A cheap poll (a `stat` of each `*.wasm` and `*.toml`, symlinks followed) rather than
//! inotify: it sees in-place writes, atomic renames and Kubernetes ConfigMap updates
//! (which swap a `..data` symlink) alike, on any file system. A change is applied only
//! once the directory has looked the same for one more interval, so a file still being
//! written is not read; whatever is read is validated before use anyway. A file that
//! could not be checked (a `.sql.toml` while the database is unavailable) is tried again
//! every [`RETRY`] even when nothing changed.

use super::Runtime;
use super::registry::Kind;
use super::swap::{DirectoryEntry, valid_name};
use crate::sql_tools::SUFFIX;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// What the poll compares: per file, the name and what `stat` says of its target.
type Fingerprint = Vec<(String, u64, SystemTime, u64)>;

/// How often a file that could not be checked is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Polls `dir` every `interval` until the runtime is gone.
pub fn spawn(runtime: &Runtime, dir: PathBuf, interval: Duration) -> tokio::task::JoinHandle<()> {
    let weak: Weak<super::Shared> = Arc::downgrade(&runtime.shared);
    tokio::spawn(async move {
        let mut applied = fingerprint(&dir);
        let mut pending: Option<Fingerprint> = None;
        let mut tried = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let now = fingerprint(&dir);
            if now == applied {
                pending = None;
                let retry = shared.rejected.load().values().any(|r| r.retry);
                if retry && tried.elapsed() >= RETRY {
                    tried = tokio::time::Instant::now();
                    Runtime { shared }.sync_directory(read_entries(&dir)).await;
                }
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now); // changed: look again next interval
                continue;
            }
            let entries = read_entries(&dir);
            tried = tokio::time::Instant::now();
            Runtime { shared }.sync_directory(entries).await;
            applied = now;
            pending = None;
        }
    })
}

/// The component files of `dir`: visible `NAME.wasm`, `NAME.sql.toml` and `NAME.toml`
/// with a valid name.
fn component_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let file_name = path.file_name()?.to_str()?.to_owned();
            if file_name.starts_with('.') {
                return None; // ..data, ..2024_*, editors' swap files
            }
            let keep = [SUFFIX, ".wasm", ".toml"]
                .iter()
                .find_map(|suffix| file_name.strip_suffix(suffix))
                .is_some_and(valid_name);
            keep.then_some((file_name, path))
        })
        .collect();
    files.sort();
    files
}

fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    component_files(dir)
        .into_iter()
        .filter_map(|(name, path)| {
            let meta = std::fs::metadata(&path).ok()?; // follows symlinks
            meta.is_file().then(|| {
                (
                    name,
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.ino(),
                )
            })
        })
        .collect()
}

/// Reads every `NAME.wasm` and `NAME.sql.toml` (and its `NAME.toml`) in `dir`.
/// Unreadable files are skipped with a warning; they count as absent until readable. A
/// name with both files is served from its `.wasm`.
pub fn read_entries(dir: &Path) -> Vec<DirectoryEntry> {
    let files = component_files(dir);
    let wasm = |name: &str| {
        files
            .iter()
            .any(|(f, _)| f.strip_suffix(".wasm") == Some(name))
    };
    files
        .iter()
        .filter_map(|(file_name, path)| {
            let (name, kind) = match file_name.strip_suffix(".wasm") {
                Some(name) => (name, Kind::Wasm),
                None => (file_name.strip_suffix(SUFFIX)?, Kind::Sql),
            };
            if kind == Kind::Sql && wasm(name) {
                tracing::warn!(
                    component = name,
                    "{file_name} is ignored: {name}.wasm has the same name; rename one"
                );
                return None;
            }
            let name = name.to_owned();
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(component = name, "cannot read {}: {e}", path.display());
                    return None;
                }
            };
            let config = std::fs::read_to_string(dir.join(format!("{name}.toml"))).ok();
            Some(DirectoryEntry {
                name,
                kind,
                path: path.clone(),
                bytes: Arc::from(bytes),
                config,
            })
        })
        .collect()
}
