//! The agent: Runtime API server, host link and the function's processes, driven by
//! one current-thread tokio event loop.

use crate::bootstrap::{self, BootstrapError};
use crate::clock;
use crate::config::{Config, Role};
use crate::entropy;
use crate::environment::runtime_env;
use crate::link::{HostEvent, Link};
use crate::runtime_proc::{find_extensions, Launch, Proc, Processes};
use crate::transport;
use runtime_api::protocol::{
    GuestMessage, HostMessage, Init, InitError, Log, LogStream, Restore, Shutdown,
};
use runtime_api::server::{self, errors::error_json, FunctionInfo, Invocations};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Grace period when the host disappears without a Shutdown.
const LOST_HOST_GRACE: Duration = Duration::from_millis(500);
/// A guest clock this close to the host's is left alone (no step under the runtime).
const CLOCK_TOLERANCE: Duration = Duration::from_millis(20);
/// How long extensions get to register before the runtime starts anyway.
const REGISTRATION_WINDOW: Duration = Duration::from_secs(10);
/// How long a sandbox restored from a snapshot tries to reach its new host.
const RESTORE_CONNECT_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("bind Runtime API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("install SIGCHLD handler: {0}")]
    Signal(std::io::Error),
}

/// How the agent ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The host asked for shutdown.
    Shutdown,
    /// The host connection ended or broke.
    HostLost(String),
}

struct Agent {
    config: Config,
    api: SocketAddr,
    inv: Arc<Invocations>,
    link: Link,
    procs: Processes,
    role: Role,
    /// CheckpointReady was sent: the next loss of the host is the snapshot's restore
    /// (vsock TRANSPORT_RESET), so reconnect instead of ending.
    awaiting_restore: bool,
}

/// Runs until Shutdown or the loss of the host connection.
pub async fn run(config: Config, link: Link, role: Role) -> Result<Outcome, AgentError> {
    let addr = config.runtime_api_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind { addr, source })?;
    let api = listener
        .local_addr()
        .map_err(|source| AgentError::Bind { addr, source })?;
    let inv = Invocations::new(link.sink.clone());
    tokio::spawn(server::serve(listener, Arc::clone(&inv)));
    // Installed before any child exists so no exit can be missed.
    let mut sigchld = signal(SignalKind::child()).map_err(AgentError::Signal)?;
    let mut agent = Agent {
        config,
        api,
        inv,
        link,
        procs: Processes::default(),
        role,
        awaiting_restore: false,
    };
    let mut init_seen = false;

    let outcome = loop {
        tokio::select! {
            event = agent.link.reader.next() => match event {
                HostEvent::Message(HostMessage::Init(init)) => {
                    if init_seen {
                        agent.system_log("duplicate Init ignored");
                        continue;
                    }
                    init_seen = true;
                    agent.start(&init).await;
                }
                HostEvent::Message(HostMessage::Invoke(mut invoke)) => {
                    invoke.deadline_ms =
                        clock::rebase_deadline(invoke.deadline_ms, invoke.host_now_ms, clock::now_ms());
                    agent.inv.push_invoke(invoke)
                }
                HostEvent::Message(HostMessage::Shutdown(s)) => {
                    agent.shutdown(&s).await;
                    break Outcome::Shutdown;
                }
                HostEvent::Message(HostMessage::Checkpoint) => agent.checkpoint(),
                HostEvent::Message(HostMessage::Restore(r)) => agent.resume(&r),
                HostEvent::Gone(reason) if agent.awaiting_restore => {
                    if let Err(e) = agent.reconnect().await {
                        agent.stop(LOST_HOST_GRACE).await;
                        break Outcome::HostLost(format!("{reason}; after it: {e}"));
                    }
                }
                HostEvent::Message(other) => {
                    agent.system_log(&format!("unexpected host message ignored: {other:?}"));
                }
                HostEvent::Gone(reason) => {
                    agent.stop(LOST_HOST_GRACE).await;
                    break Outcome::HostLost(reason);
                }
            },
            _ = sigchld.recv() => agent.reap().await,
        }
    };
    agent.link.flush(Duration::from_secs(2));
    Ok(outcome)
}

impl Agent {
    /// Init is done and the host is about to snapshot the VM: CheckpointReady goes out
    /// after everything already queued (the link keeps frames in order), and nothing
    /// after it until the restore.
    fn checkpoint(&mut self) {
        (self.link.sink)(GuestMessage::CheckpointReady);
        self.link.flush(Duration::from_secs(2));
        self.awaiting_restore = true;
    }

    /// This VM is a restored copy: its host link was reset with the vsock transport.
    async fn reconnect(&mut self) -> Result<(), String> {
        let transport = self.config.transport.clone();
        let stream = tokio::task::spawn_blocking(move || {
            transport::connect(&transport, RESTORE_CONNECT_PATIENCE)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.link.reconnect(stream).map_err(|e| e.to_string())
    }

    /// The host's Restore: a seed of this copy's own for the kernel RNG, and the time.
    /// A copy that cannot reseed must not serve (it would share random state with its
    /// siblings): it says so and the host discards it.
    fn resume(&mut self, r: &Restore) {
        if !std::mem::take(&mut self.awaiting_restore) {
            self.system_log("Restore without a checkpoint ignored");
            return;
        }
        if self.role == Role::Vm {
            if let Err(e) = entropy::reseed(&r.seed) {
                let msg = format!("cannot reseed the kernel RNG after the restore: {e}");
                self.system_log(&msg);
                (self.link.sink)(GuestMessage::RestoreError(InitError {
                    error_type: "Runtime.RestoreError".into(),
                    body: error_json("Runtime.RestoreError", &msg),
                }));
                return;
            }
            match clock::sync_to_host(r.host_now_ms, CLOCK_TOLERANCE) {
                Ok(0) => {}
                Ok(step) => self.system_log(&format!("clock stepped {step} ms to the host's")),
                Err(e) => self.system_log(&format!("cannot set the clock: {e}")),
            }
        }
        self.inv.restored();
    }

    async fn reap(&mut self) {
        self.procs.reap(&self.inv, &self.link.sink, false).await;
    }

    async fn stop(&mut self, grace: Duration) {
        self.procs
            .stop(&self.inv, &self.link.sink, grace, self.role.is_pid1())
            .await;
    }

    async fn shutdown(&mut self, s: &Shutdown) {
        let grace = Duration::from_millis(u64::from(s.grace_ms));
        let deadline_ms = clock::now_ms() + u64::from(s.grace_ms);
        self.inv.shutdown_extensions(&s.reason, deadline_ms);
        self.stop(grace).await;
    }

    /// Init: extensions first (they register), then the runtime.
    async fn start(&mut self, init: &Init) {
        if self.role == Role::Vm {
            match clock::sync_to_host(init.host_now_ms, CLOCK_TOLERANCE) {
                Ok(0) => {}
                Ok(step) => self.system_log(&format!("clock stepped {step} ms to the host's")),
                Err(e) => self.system_log(&format!("cannot set the clock: {e}")),
            }
        }
        if init.initialization_type == "snap-start" {
            self.inv.expect_snapshot();
        }
        self.inv.set_function(FunctionInfo {
            name: init.function_name.clone(),
            version: init.function_version.clone(),
            handler: init.handler.clone(),
        });
        let env = runtime_env(init, &self.config, self.api);
        let (inv, sink) = (Arc::clone(&self.inv), self.link.sink.clone());
        let (opt, task) = (self.config.opt_dir.clone(), self.config.task_root.clone());
        let launch = |cwd| Launch {
            args: &[],
            env: &env,
            cwd,
            user: self.config.runtime_user,
            inv: &inv,
            sink: &sink,
        };
        let extensions: Vec<_> = find_extensions(&opt)
            .into_iter()
            .map(|(name, path)| Proc::start(&name, &path, &launch(&opt)))
            .collect();
        for started in extensions {
            match started {
                Ok(p) => self.procs.extensions.push(p),
                Err(e) => self.fail_init(&e),
            }
        }
        self.await_registration().await;
        self.inv.close_registration();
        let user = self.config.runtime_user;
        let cwd = match init.working_dir.as_str() {
            "" => task,
            dir => PathBuf::from(dir),
        };
        let started = runtime_program(init, &self.config, &env).and_then(|(path, args)| {
            let launch = Launch {
                args: &args,
                env: &env,
                cwd: &cwd,
                user,
                inv: &inv,
                sink: &sink,
            };
            Proc::start("runtime", &path, &launch)
        });
        match started {
            Ok(p) => {
                self.procs.runtime = Some(p);
                // Only in a VM is the kernel's OOM count the function's own.
                if self.role == Role::Vm {
                    self.procs.oom_kills_at_start = crate::runtime_proc::oom_kills();
                }
            }
            Err(e) => self.fail_init(&e),
        }
        self.reap().await;
    }

    /// Waits until every running extension has registered (bounded).
    async fn await_registration(&mut self) {
        if self.procs.extensions.is_empty() {
            return;
        }
        let deadline = Instant::now() + REGISTRATION_WINDOW;
        while Instant::now() < deadline {
            self.reap().await;
            if self.procs.unregistered(&self.inv.registered_extensions()) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.system_log("some extensions did not register in time");
    }

    fn fail_init(&self, e: &BootstrapError) {
        let body = error_json(e.error_type(), &e.to_string());
        self.system_log(&format!("init failed: {e}"));
        if self
            .inv
            .init_error(e.error_type().to_string(), body)
            .is_err()
        {
            self.system_log("init error not reported: init already ended or failed");
        }
    }

    /// A guest-init message to the host's log stream (and the console).
    fn system_log(&self, text: &str) {
        eprintln!("guest-init: {text}");
        (self.link.sink)(GuestMessage::Log(Log {
            stream: LogStream::System,
            request_id: None,
            line: text.as_bytes().to_vec(),
        }));
    }
}

/// What runs as the runtime: a container image's command when Init carries one,
/// otherwise the first `bootstrap` in Lambda's search order, without arguments.
fn runtime_program(
    init: &Init,
    config: &Config,
    env: &BTreeMap<String, String>,
) -> Result<(PathBuf, Vec<String>), BootstrapError> {
    if init.command.is_empty() {
        bootstrap::find(config).map(|p| (p, Vec::new()))
    } else {
        bootstrap::resolve_command(&init.command, env)
    }
}
