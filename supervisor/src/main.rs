//! `supervisor serve ...`: see `supervisor --help`.

use clap::Parser as _;
use supervisor::config::{Cli, Command};
use supervisor::Supervisor;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let Cli { command } = Cli::parse();
    let Command::Serve(args) = command;
    let result = args
        .resolve()
        .map_err(|e| e.to_string())
        .and_then(|config| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting runtime: {e}"))?
                .block_on(run(config))
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supervisor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: supervisor::config::Config) -> Result<(), String> {
    let listen = config.listen;
    let (sup, report) = Supervisor::open(config).map_err(|e| e.to_string())?;
    if let Some(path) = &report.generated_credentials {
        eprintln!(
            "supervisor: generated access key {} ; credentials stored in {} (mode 0600)",
            sup.credentials().access_key_id,
            path.display()
        );
    }
    if let Some(path) = &report.generated_master_key {
        eprintln!(
            "supervisor: generated master key in {} (mode 0600); back it up",
            path.display()
        );
    }
    if report.orphans_removed > 0 {
        tracing::info!(
            count = report.orphans_removed,
            "removed code objects left by an interrupted write"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("binding {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts wait for this exact line.
    eprintln!("supervisor: listening on http://{bound}");
    let router = sup.router(axum::Router::new(), axum::Router::new());
    supervisor::http::serve(listener, router, shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))?;
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
