//! `mcp-sandbox component check|compile FILE`: what the server would say of a component,
//! offline (no database needed), and compiling it into the cache ahead of time. A file of
//! declared SQL tools (`NAME.sql.toml`) is checked against a database (`--database-url`,
//! or the sources of `--sources`).

use crate::config::{ComponentArgs, ComponentCommand};
use crate::db::{Db, Sources};
use crate::metrics::Metrics;
use crate::runtime::{Inspection, Kind, Runtime, SQL_TOOLS_SUFFIX};
use anyhow::Context;
use serde_json::json;
use std::sync::Arc;

/// Runs the subcommand; `Ok(false)` when the component would be rejected.
pub async fn run(command: ComponentCommand) -> anyhow::Result<bool> {
    let (args, compile) = match command {
        ComponentCommand::Check(args) => (args, false),
        ComponentCommand::Compile(args) => (args, true),
    };
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let file_name = args
        .file
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("component");
    let (name, kind) = match file_name.strip_suffix(SQL_TOOLS_SUFFIX) {
        Some(name) => (name, Kind::Sql),
        None => (
            file_name.strip_suffix(".wasm").unwrap_or(file_name),
            Kind::Wasm,
        ),
    };
    if kind == Kind::Sql && compile {
        anyhow::bail!("a {SQL_TOOLS_SUFFIX} file is not compiled; `component check` it");
    }
    let runtime = offline_runtime(&args, compile, kind).await?;
    match runtime.inspect(name, kind, bytes).await {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&describe(&report))?);
            if compile {
                let dir = args.common.sandbox.cache_dir().unwrap_or_default();
                eprintln!(
                    "compiled into the cache at {} ({:.0} ms); servers using that cache and \
                     the same limits load it without compiling",
                    dir.display(),
                    report.load_ms
                );
            }
            Ok(true)
        }
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            Ok(false)
        }
    }
}

/// An engine configured exactly as `serve` would configure it, with no components and a
/// pool that never connects (validating a component does not query); for SQL tools, a
/// pool of the given database, whose role is checked as `serve` checks it.
async fn offline_runtime(
    args: &ComponentArgs,
    compile: bool,
    kind: Kind,
) -> anyhow::Result<Runtime> {
    let common = &args.common;
    let call_timeout = common.sandbox.call_timeout;
    let (pool, db_limits) = common.database.settings(call_timeout);
    let sources = match (kind, &args.database_url, &common.database.sources) {
        (_, Some(_), Some(_)) => {
            anyhow::bail!("give --database-url (DATABASE_URL) or --sources, not both")
        }
        // As `serve --sources` would: tools take `database`, SQL tools name their source.
        (kind, None, Some(path)) => {
            let specs = crate::config::sources::load(path, &common.database, call_timeout)?;
            let sources = Sources::named(specs)
                .map_err(|e| anyhow::anyhow!("the sources file {}: {e}", path.display()))?;
            if kind == Kind::Sql {
                for source in sources.list().iter() {
                    crate::check_database(&source.db, common.database.connect_timeout, false)
                        .await
                        .with_context(|| format!("source `{}`", source.name))?;
                }
            }
            sources
        }
        (Kind::Wasm, _, None) => {
            Sources::single(Db::new("postgres://localhost/unused", pool, db_limits)?)
        }
        (Kind::Sql, Some(url), None) => {
            let db = Db::new(url.expose(), pool, db_limits)?;
            crate::check_database(&db, common.database.connect_timeout, false).await?;
            Sources::single(db)
        }
        (Kind::Sql, None, None) => anyhow::bail!(
            "checking a {SQL_TOOLS_SUFFIX} file prepares its statements against the database: \
             pass --database-url (or set DATABASE_URL), or --sources"
        ),
    };
    let mut settings = common.sandbox.settings();
    settings.components_dir = None;
    if compile && settings.cache_dir.is_none() {
        anyhow::bail!("compiling needs a cache directory (--cache-dir)");
    }
    if !compile {
        settings.cache_dir = None; // checking must not fill the cache
    }
    Runtime::bare(sources, settings, Arc::new(Metrics::new()))
}

fn describe(report: &Inspection) -> serde_json::Value {
    let tools: Vec<_> = report
        .tools
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "title": t.title,
                "description": t.description,
                "inputSchema": &*t.input_schema,
                "outputSchema": t.output_schema.as_deref(),
                "annotations": {
                    "readOnlyHint": t.annotations.read_only,
                    "destructiveHint": t.annotations.destructive,
                    "idempotentHint": t.annotations.idempotent,
                    "openWorldHint": t.annotations.open_world,
                },
            })
        })
        .collect();
    json!({
        "name": report.name,
        "world": report.world,
        "digest": report.digest,
        "size": report.size,
        "load_ms": (report.load_ms * 10.0).round() / 10.0,
        "tools": tools,
    })
}
