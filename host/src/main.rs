//! The `mcp-sandbox` binary: parse the command line, then serve (over HTTP or stdio), or
//! run the demo or an offline command.

use clap::Parser;
use mcp_sandbox::config::{AuditCommand, Cli, Command, ComponentCommand, ServeArgs};
use mcp_sandbox::server;
use std::process::ExitCode;

/// jemalloc rather than glibc's malloc: per-thread caches suit tokio's workers handing
/// buffers to each other; at 16 clients it cut the server's CPU per tool call by 4–14%
/// and raised `/health` throughput by half, with less idle memory (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    mcp_sandbox::telemetry::init(cli.log_format);
    if let Command::Audit(AuditCommand::Verify { files, key_file }) = &cli.command {
        return verify_audit(files, key_file.as_deref());
    }
    if let Command::ClientConfig(args) = &cli.command {
        return match mcp_sandbox::client_config::run(args, mcp_sandbox::demo::postgres_bin_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::RoleSql(args) = &cli.command {
        print!(
            "{}",
            mcp_sandbox::db::recipe::render(&mcp_sandbox::db::recipe::Recipe {
                role: &args.role,
                database: &args.database,
                schemas: &args.schemas,
                owners: &args.owners,
            })
        );
        return ExitCode::SUCCESS;
    }
    raise_open_files_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let worker_threads = match &cli.command {
        Command::Serve(args) => args.common.sandbox.worker_threads,
        Command::Demo(args) => args.common.sandbox.worker_threads,
        Command::Stdio(args) => args.sandbox.worker_threads,
        Command::Component(ComponentCommand::Check(args) | ComponentCommand::Compile(args)) => {
            args.common.sandbox.worker_threads
        }
        Command::Audit(_) | Command::ClientConfig(_) | Command::RoleSql(_) => None,
    };
    if let Some(threads) = worker_threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        tracing::info!(
            worker_threads = runtime.metrics().num_workers(),
            "async runtime started"
        );
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await.map(|()| true),
            Command::Demo(args) => mcp_sandbox::demo::run(args).await.map(|()| true),
            Command::Stdio(args) => mcp_sandbox::stdio::run(args).await.map(|()| true),
            Command::Component(command) => mcp_sandbox::component_cmd::run(command).await,
            // handled above, without a runtime
            Command::Audit(_) | Command::ClientConfig(_) | Command::RoleSql(_) => Ok(true),
        }
    });
    // A read of standard input (stdio, when it is not a pipe) cannot be cancelled: do
    // not wait for it, nor for any other blocking task, to end the process.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auth = mcp_sandbox::auth(&args)?;
    if !auth.is_enabled() {
        tracing::warn!(
            "authentication is off (--insecure-no-auth): anyone who can reach {} can query the database",
            args.listen
        );
    }
    let store = args.store.settings()?;
    // Bound first: a taken port is said at once, before the database and components.
    let (listener, metrics) = mcp_sandbox::bind_all(args.listen, &args.common).await?;
    let app = mcp_sandbox::build_app(
        args.database_url.as_ref().map(|url| url.expose()),
        auth,
        args.listen,
        &args.common,
        store,
    )
    .await?;
    let stop = mcp_sandbox::shutdown_signal();
    let scheme = |https: bool| if https { "https" } else { "http" };
    println!(
        "listening on {}://{}",
        scheme(app.is_https()),
        listener.local_addr()?
    );
    if let Some(metrics) = &metrics {
        println!(
            "metrics on {}://{}/metrics",
            scheme(app.metrics_is_https()),
            metrics.local_addr()?
        );
    }
    server::run(listener, metrics, app, stop).await?;
    Ok(())
}

/// `audit verify`: prints the verdict; exits 0 (intact), 1 (tampered) or 2 (a torn last
/// line, from a crash).
fn verify_audit(files: &[std::path::PathBuf], key_file: Option<&std::path::Path>) -> ExitCode {
    let key = match key_file.map(mcp_sandbox::audit::read_key).transpose() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    if key.is_none() {
        eprintln!(
            "note: no --key-file: only sequence numbers are checked (an edit that keeps them \
             goes unnoticed)"
        );
    }
    if let [dir] = files
        && dir.is_dir()
    {
        return verify_audit_dir(dir, key.as_ref());
    }
    if let Some(dir) = files.iter().find(|f| f.is_dir()) {
        eprintln!(
            "error: {} is a directory: give one directory (each chain in it checked on its \
             own) or the files of one chain",
            dir.display()
        );
        return ExitCode::from(3);
    }
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    match mcp_sandbox::audit::verify(&paths, key.as_ref()) {
        Ok(verdict) => {
            println!("{verdict}");
            ExitCode::from(verdict.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("error: reading the audit log: {e}");
            ExitCode::from(3)
        }
    }
}

/// `audit verify DIR`: each chain in the directory (a fleet's replicas' files, each with
/// its rotations) checked on its own; one line per chain; the worst verdict's exit code.
fn verify_audit_dir(dir: &std::path::Path, key: Option<&mcp_sandbox::audit::Key>) -> ExitCode {
    use mcp_sandbox::audit::directory;
    match directory::verify_dir(dir, key) {
        Ok((verdicts, _)) if verdicts.is_empty() => {
            eprintln!("error: {} holds no audit log files", dir.display());
            ExitCode::from(3)
        }
        Ok((verdicts, skipped)) => {
            for entry in skipped {
                eprintln!("note: left out {entry}");
            }
            for chain in &verdicts {
                match &chain.verdict {
                    Ok(verdict) => println!("{}: {verdict}", chain.chain),
                    Err(e) => println!("{}: UNREADABLE: {e}", chain.chain),
                }
            }
            ExitCode::from(directory::exit_code(&verdicts) as u8)
        }
        Err(e) => {
            eprintln!("error: reading the directory {}: {e}", dir.display());
            ExitCode::from(3)
        }
    }
}

/// Every connection costs a file descriptor, and `--max-connections` is meant to be the
/// limit, not the soft `RLIMIT_NOFILE` (often 1024): raise the soft limit to the hard one.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("could not raise the open files limit: {e}");
        }
    }
}
