//! Keeps the served sources in step with the sources file (`--sources`): a poll of its
//! contents every watch interval, applied once it has looked the same for one more
//! interval (a file still being written is not read). A file that does not parse, or
//! names a source whose configuration is wrong whatever the database's state (TLS, a
//! role that can write), is refused whole: the previous sources keep serving, and
//! `/health` and `/ready` say why. A new source that is merely down is served (its
//! calls fail until it answers), as at start with `--allow-db-down-at-start`.

use crate::config::{DatabaseArgs, SandboxArgs, sources};
use crate::db::{CheckError, Sources};
use crate::runtime::Runtime;
use std::path::PathBuf;
use std::time::Duration;

/// Polls `path` every `--watch-interval` while the runtime lives.
pub fn spawn(
    runtime: &Runtime,
    path: PathBuf,
    database: &DatabaseArgs,
    sandbox: &SandboxArgs,
) -> tokio::task::JoinHandle<()> {
    let runtime = runtime.downgrade();
    let database = database.clone();
    let interval = sandbox.watch_interval;
    let call_timeout = sandbox.call_timeout;
    tokio::spawn(async move {
        // Nothing applied yet: the file as read at start may have changed while the
        // server started; a first look that finds it the same changes nothing.
        let mut applied: Option<Vec<u8>> = None;
        let mut pending: Option<Option<Vec<u8>>> = None;
        loop {
            tokio::time::sleep(interval).await;
            let Some(runtime) = runtime.upgrade() else {
                return;
            };
            let now = std::fs::read(&path).ok();
            if now == applied {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now); // changed: look again next interval
                continue;
            }
            applied = now;
            pending = None;
            reload(&runtime, &path, &database, call_timeout).await;
        }
    })
}

/// Reads the file and, if it is good, serves what it names.
pub async fn reload(
    runtime: &Runtime,
    path: &std::path::Path,
    database: &DatabaseArgs,
    call_timeout: Duration,
) {
    let sources = runtime.sources();
    match apply(sources, path, database, call_timeout).await {
        Ok(false) => {}
        Ok(true) => {
            let names = sources.names();
            tracing::info!(sources = ?names, "the sources file changed: serving its sources");
            runtime.sources_changed();
        }
        Err(reason) => {
            tracing::error!(
                "the sources file {} is refused (the previous sources serve): {reason}",
                path.display()
            );
            sources.set_rejected(Some(reason));
        }
    }
}

/// Serves the file's sources unless it is refused. Whether anything changed.
async fn apply(
    sources: &Sources,
    path: &std::path::Path,
    database: &DatabaseArgs,
    call_timeout: Duration,
) -> Result<bool, String> {
    let specs = sources::load(path, database, call_timeout).map_err(|e| e.to_string())?;
    if sources.same_as(&specs) {
        sources.set_rejected(None);
        return Ok(false);
    }
    // The new and changed sources are checked before they serve.
    let prepared = sources.prepare(specs).map_err(|e| e.to_string())?;
    for source in &prepared.fresh {
        match source.db.check(database.connect_timeout).await {
            Ok(()) => {}
            Err(CheckError::Config(e)) => return Err(format!("source `{}`: {e}", source.name)),
            Err(CheckError::Unavailable { reason, .. }) => tracing::warn!(
                source = &*source.name,
                "a source of the sources file cannot be used yet: {reason}; serving the \
                 others, and retrying it with every call"
            ),
        }
    }
    sources.install(prepared);
    Ok(true)
}
