//! `supervisor serve ...` and `supervisor demo`: see `supervisor --help`.

use clap::Parser as _;
use supervisor::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // Taken out of the environment before any thread starts: nothing the supervisor runs
    // (the vmm probe, mkfs.ext4, sandboxes) inherits the secret.
    let secret = std::env::var("SUPERVISOR_SECRET_ACCESS_KEY").ok();
    std::env::remove_var("SUPERVISOR_SECRET_ACCESS_KEY");
    let Cli {
        mut command,
        async_threads,
    } = Cli::parse();
    if let Command::Serve(args) = &mut command {
        args.secret_access_key = secret;
    }
    let runtime = match worker::runtime::build(async_threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("supervisor: starting runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Serve(args) => args
            .resolve()
            .map_err(|e| e.to_string())
            .and_then(|config| runtime.block_on(serve(config))),
        Command::Demo(args) => runtime.block_on(supervisor::demo::run(*args)),
        Command::Worker(args) => runtime.block_on(supervisor::cluster_cli::run_worker(
            *args,
            shutdown_signal(),
        )),
        Command::Cluster(cmd) => runtime.block_on(supervisor::cluster_cli::run_cluster(cmd)),
        Command::Migrate(args) => supervisor::migrate::run(*args),
    };
    // Do not wait forever for blocking tasks (e.g. a sandbox that never started).
    runtime.shutdown_timeout(std::time::Duration::from_secs(3));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supervisor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: supervisor::config::Config) -> Result<(), String> {
    let prepared = supervisor::serve::prepare(config).await?;
    // Tests and scripts wait for this exact line.
    eprintln!("supervisor: listening on http://{}", prepared.addr);
    prepared.run(shutdown_signal()).await?;
    eprintln!("supervisor: shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; only SIGKILL will stop the server");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
