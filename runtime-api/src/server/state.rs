//! The runtime's invocation state machine, shared by the HTTP handlers and guest-init.
//!
//! It decides which frames go to the host and which HTTP errors the runtime gets. The
//! lock is a std mutex that is never held across an `.await`.

use super::errors::ApiError;
use super::ext_state::{invoke_event, shutdown_event, Ext, ExtEvent, Subscriptions};
use crate::protocol::{GuestMessage, InitError, Invoke, InvokeError, RuntimeExited, StreamEnd};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// The error type of a runtime that exited on its own.
pub const EXIT_ERROR: &str = "Runtime.ExitError";
/// The error type of a runtime the kernel's OOM killer ended.
pub const OUT_OF_MEMORY: &str = "Runtime.OutOfMemory";

#[path = "restore_state.rs"]
mod restore;

/// Where frames for the host go (guest-init hands them to its writer thread).
pub type Sink = Arc<dyn Fn(GuestMessage) + Send + Sync>;

/// The request id of the in-flight invocation, read by the log forwarders.
pub type LogTag = Arc<Mutex<Option<String>>>;

#[derive(Debug)]
struct InFlight {
    request_id: String,
    responded: bool,
    stream_open: bool,
}

#[derive(Default)]
struct State {
    init_done: bool,
    init_failed: bool,
    exited: bool,
    /// The runtime has called `/next` at least once.
    runtime_ready: bool,
    queue: VecDeque<Invoke>,
    waiter: Option<oneshot::Sender<Invoke>>,
    current: Option<InFlight>,
    /// Registered extensions by identifier.
    extensions: BTreeMap<String, Ext>,
    registration_closed: bool,
    function: FunctionInfo,
    /// Why the runtime is gone, for invocations that arrive afterwards.
    /// (error type, message) of a runtime that exited.
    exit_message: Option<(String, String)>,
    /// The init error sent to the host, repeated for invocations after a failed init
    /// (or a failed restore).
    init_error: Option<InitError>,
    restore: restore::RestoreGate,
}

/// What `/extension/register` answers with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: String,
    pub version: String,
    pub handler: String,
}

/// Result of `GET /extension/event/next`.
pub enum ExtNext {
    Ready(ExtEvent),
    Wait(oneshot::Receiver<ExtEvent>),
}

/// Shared invocation state.
pub struct Invocations {
    state: Mutex<State>,
    sink: Sink,
    log_tag: LogTag,
}

impl Invocations {
    pub fn new(sink: Sink) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            sink,
            log_tag: Arc::new(Mutex::new(None)),
        })
    }

    /// The handle log forwarders use to tag lines with the current request id.
    pub fn log_tag(&self) -> LogTag {
        Arc::clone(&self.log_tag)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way
        // that matters more than refusing service, so recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_tag(&self, id: Option<String>) {
        *self.log_tag.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    fn begin(&self, st: &mut State, invoke: &Invoke) {
        st.current = Some(InFlight {
            request_id: invoke.request_id.clone(),
            responded: false,
            stream_open: false,
        });
        self.set_tag(Some(invoke.request_id.clone()));
    }

    /// `GET /runtime/invocation/next`. The first call ends the init phase.
    /// Returns a channel that delivers the invocation (at once if one is queued).
    pub fn next(&self) -> Result<oneshot::Receiver<Invoke>, ApiError> {
        let mut st = self.lock();
        if st.exited {
            return Err(ApiError::RuntimeExited);
        }
        if st.current.as_ref().is_some_and(|c| !c.responded) {
            return Err(ApiError::InvalidStateTransition {
                from: "Invoke",
                to: "Ready",
            });
        }
        if st.waiter.as_ref().is_some_and(|w| !w.is_closed()) {
            return Err(ApiError::InvalidStateTransition {
                from: "Ready",
                to: "Ready",
            });
        }
        // The log tag keeps the previous request id until the next invoke begins: lines
        // a runtime prints right before posting its response are read by the forwarder
        // threads a little later and still belong to that request.
        st.current = None;
        st.runtime_ready = true;
        let (tx, rx) = oneshot::channel();
        st.waiter = Some(tx);
        self.ready_after_restore(&mut st);
        self.dispatch(&mut st);
        Ok(rx)
    }

    /// Moves the state machine on: reports the end of init once the runtime and every
    /// extension wait for events, and hands the next invocation to the runtime (and
    /// INVOKE events to extensions) once all of them finished the previous one.
    fn dispatch(&self, st: &mut State) {
        let extensions_idle = st.extensions.values().all(|e| !e.busy);
        if !extensions_idle || !st.runtime_ready {
            return;
        }
        if !st.init_done && !st.init_failed {
            st.init_done = true;
            st.registration_closed = true;
            (self.sink)(GuestMessage::InitDone);
        }
        if !st.init_done || st.current.as_ref().is_some_and(|c| !c.responded) {
            return;
        }
        let Some(waiter) = st.waiter.take() else {
            return;
        };
        let Some(invoke) = st.queue.pop_front() else {
            st.waiter = Some(waiter);
            return;
        };
        // Mark it in flight before handing it over so a fast /response finds it.
        self.begin(st, &invoke);
        // Built only when someone listens: the JSON maps cost allocations per invoke.
        let event = st
            .extensions
            .values()
            .any(|e| e.subs.invoke)
            .then(|| invoke_event(&invoke));
        match waiter.send(invoke) {
            Ok(()) => {
                if let Some(event) = event {
                    for ext in st.extensions.values_mut().filter(|e| e.subs.invoke) {
                        ext.deliver(event.clone());
                    }
                }
            }
            Err(invoke) => {
                // The runtime hung up its /next; keep the invoke for the next call.
                st.current = None;
                st.queue.push_front(invoke);
            }
        }
    }

    /// An Invoke frame from the host. After a failed init or a runtime exit nothing
    /// will ever serve it, so it is answered at once with that error.
    pub fn push_invoke(&self, invoke: Invoke) {
        let mut st = self.lock();
        if let Some((error_type, message)) = &st.exit_message {
            let body = super::errors::error_json(
                error_type,
                &format!("RequestId: {} Error: {message}", invoke.request_id),
            );
            (self.sink)(GuestMessage::InvokeError(InvokeError {
                request_id: invoke.request_id,
                error_type: error_type.clone(),
                body,
            }));
            return;
        }
        if let Some(e) = &st.init_error {
            (self.sink)(GuestMessage::InvokeError(InvokeError {
                request_id: invoke.request_id,
                error_type: e.error_type.clone(),
                body: e.body.clone(),
            }));
            return;
        }
        st.queue.push_back(invoke);
        self.dispatch(&mut st);
    }

    /// Claims the right to answer `request_id` (`/response` or `/error`).
    pub fn claim_response(&self, request_id: &str, streaming: bool) -> Result<(), ApiError> {
        let mut st = self.lock();
        let current = st
            .current
            .as_mut()
            .filter(|c| c.request_id == request_id)
            .ok_or(ApiError::InvalidRequestId)?;
        if current.responded {
            return Err(ApiError::InvalidStateTransition {
                from: "InvocationResponse",
                to: "InvocationResponse",
            });
        }
        current.responded = true;
        current.stream_open = streaming;
        Ok(())
    }

    /// A streamed response finished (normally or not).
    pub fn stream_closed(&self, request_id: &str) {
        let mut st = self.lock();
        if let Some(c) = st.current.as_mut().filter(|c| c.request_id == request_id) {
            c.stream_open = false;
        }
    }

    /// `POST /runtime/init/error`.
    pub fn init_error(&self, error_type: String, body: Vec<u8>) -> Result<(), ApiError> {
        let mut st = self.lock();
        if st.init_done || st.init_failed {
            return Err(ApiError::InvalidStateTransition {
                from: if st.init_done { "Ready" } else { "InitError" },
                to: "InitError",
            });
        }
        st.init_failed = true;
        let err = InitError { error_type, body };
        st.init_error = Some(err.clone());
        (self.sink)(GuestMessage::InitError(err.clone()));
        // Invocations the host already queued can never run now.
        for invoke in std::mem::take(&mut st.queue) {
            (self.sink)(GuestMessage::InvokeError(InvokeError {
                request_id: invoke.request_id,
                error_type: err.error_type.clone(),
                body: err.body.clone(),
            }));
        }
        Ok(())
    }

    /// Sends a frame to the host.
    pub fn send(&self, msg: GuestMessage) {
        (self.sink)(msg);
    }

    /// The runtime process ended. Fails whatever it left unfinished with `error_type`
    /// (`Runtime.ExitError`, or `Runtime.OutOfMemory` when the kernel's OOM killer
    /// took it) and, unless `quiet` (shutdown in progress), tells the host.
    pub fn runtime_exited(&self, error_type: &str, message: &str, quiet: bool) {
        let mut st = self.lock();
        if st.exited {
            return;
        }
        st.exited = true;
        st.waiter = None;
        st.exit_message = Some((error_type.to_owned(), message.to_owned()));
        let exit = error_type;
        match st.current.take() {
            Some(c) if !c.responded => {
                let body = super::errors::error_json(
                    exit,
                    &format!("RequestId: {} Error: {message}", c.request_id),
                );
                (self.sink)(GuestMessage::InvokeError(InvokeError {
                    request_id: c.request_id,
                    error_type: exit.to_string(),
                    body,
                }));
            }
            Some(c) if c.stream_open => {
                (self.sink)(GuestMessage::StreamEnd(StreamEnd {
                    request_id: c.request_id,
                    error_type: Some(exit.to_string()),
                    error_body: Some(message.to_string()),
                }));
            }
            _ if !st.init_done && !st.init_failed => {
                st.init_failed = true;
                let body = super::errors::error_json(exit, &format!("Error: {message}"));
                (self.sink)(GuestMessage::InitError(InitError {
                    error_type: exit.to_string(),
                    body,
                }));
            }
            _ => {}
        }
        for invoke in std::mem::take(&mut st.queue) {
            let body = super::errors::error_json(
                exit,
                &format!("RequestId: {} Error: {message}", invoke.request_id),
            );
            (self.sink)(GuestMessage::InvokeError(InvokeError {
                request_id: invoke.request_id,
                error_type: exit.to_string(),
                body,
            }));
        }
        self.set_tag(None);
        if !quiet {
            (self.sink)(GuestMessage::RuntimeExited(RuntimeExited {
                error_type: exit.to_string(),
                message: message.to_string(),
            }));
        }
    }

    /// Records what `/extension/register` reports about the function.
    pub fn set_function(&self, info: FunctionInfo) {
        self.lock().function = info;
    }

    /// `POST /extension/register`: returns the identifier and the function info.
    pub fn register_extension(
        &self,
        name: &str,
        subs: Subscriptions,
    ) -> Result<(String, FunctionInfo), ApiError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut st = self.lock();
        if st.registration_closed {
            return Err(ApiError::RegistrationClosed);
        }
        if st.extensions.values().any(|e| e.name == name) {
            return Err(ApiError::InvalidExtensionRequest(format!(
                "extension {name:?} is already registered"
            )));
        }
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id());
        st.extensions
            .insert(id.clone(), Ext::new(name.to_string(), subs));
        Ok((id, st.function.clone()))
    }

    /// Names of the extensions registered so far.
    pub fn registered_extensions(&self) -> Vec<String> {
        self.lock()
            .extensions
            .values()
            .map(|e| e.name.clone())
            .collect()
    }

    /// Ends the registration window (the runtime is about to start).
    pub fn close_registration(&self) {
        self.lock().registration_closed = true;
    }

    /// `GET /extension/event/next`: the extension finished its previous event.
    pub fn extension_next(&self, id: &str) -> Result<ExtNext, ApiError> {
        let mut st = self.lock();
        let ext = st
            .extensions
            .get_mut(id)
            .ok_or(ApiError::ExtensionForbidden)?;
        ext.busy = false;
        if let Some(event) = ext.pending.pop_front() {
            ext.busy = true;
            return Ok(ExtNext::Ready(event));
        }
        let (tx, rx) = oneshot::channel();
        ext.waiter = Some(tx);
        self.dispatch(&mut st);
        Ok(ExtNext::Wait(rx))
    }

    /// `POST /extension/init/error`: fails the init phase.
    pub fn extension_init_error(
        &self,
        id: &str,
        error_type: String,
        body: Vec<u8>,
    ) -> Result<(), ApiError> {
        if !self.lock().extensions.contains_key(id) {
            return Err(ApiError::ExtensionForbidden);
        }
        self.init_error(error_type, body)
    }

    /// The name of a registered extension.
    pub fn extension_name(&self, id: &str) -> Result<String, ApiError> {
        self.lock()
            .extensions
            .get(id)
            .map(|e| e.name.clone())
            .ok_or(ApiError::ExtensionForbidden)
    }

    /// Sends SHUTDOWN to the extensions that subscribed to it; returns how many.
    pub fn shutdown_extensions(&self, reason: &str, deadline_ms: u64) -> usize {
        let mut st = self.lock();
        let event = shutdown_event(reason, deadline_ms);
        let mut n = 0;
        for ext in st.extensions.values_mut().filter(|e| e.subs.shutdown) {
            ext.deliver(event.clone());
            n += 1;
        }
        n
    }

    /// Whether the first `/next` has happened.
    pub fn init_done(&self) -> bool {
        self.lock().init_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> (Arc<Invocations>, Arc<Mutex<Vec<GuestMessage>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        let inv = Invocations::new(Arc::new(move |m| l.lock().unwrap().push(m)));
        (inv, log)
    }

    fn invoke(id: &str) -> Invoke {
        Invoke {
            request_id: id.into(),
            ..Invoke::default()
        }
    }

    fn next_now(inv: &Invocations) -> Invoke {
        inv.next()
            .expect("next")
            .try_recv()
            .expect("an invoke is ready")
    }

    #[test]
    fn first_next_reports_init_done_and_queue_delivers_in_order() {
        let (inv, log) = recorder();
        inv.push_invoke(invoke("a"));
        inv.push_invoke(invoke("b"));
        assert_eq!(next_now(&inv).request_id, "a");
        assert_eq!(log.lock().unwrap().as_slice(), &[GuestMessage::InitDone]);
        assert_eq!(inv.log_tag().lock().unwrap().as_deref(), Some("a"));
        // Asking for the next one before answering is a state error.
        assert!(matches!(
            inv.next(),
            Err(ApiError::InvalidStateTransition { .. })
        ));
        assert_eq!(
            inv.claim_response("zzz", false),
            Err(ApiError::InvalidRequestId)
        );
        inv.claim_response("a", false).unwrap();
        assert!(matches!(
            inv.claim_response("a", false),
            Err(ApiError::InvalidStateTransition { .. })
        ));
        assert_eq!(next_now(&inv).request_id, "b");
        assert_eq!(log.lock().unwrap().len(), 1, "InitDone only once");
    }

    #[test]
    fn waiting_next_gets_the_pushed_invoke() {
        let (inv, _log) = recorder();
        let mut rx = inv.next().unwrap();
        assert!(rx.try_recv().is_err());
        inv.push_invoke(invoke("w"));
        assert_eq!(rx.try_recv().unwrap().request_id, "w");
        inv.claim_response("w", false).unwrap();
    }

    #[test]
    fn hung_up_waiter_requeues_the_invoke() {
        let (inv, _log) = recorder();
        drop(inv.next().unwrap());
        inv.push_invoke(invoke("kept"));
        assert_eq!(next_now(&inv).request_id, "kept");
    }

    #[test]
    fn exit_mid_invoke_is_an_exit_error_for_that_request() {
        let (inv, log) = recorder();
        inv.push_invoke(invoke("r"));
        let _ = next_now(&inv);
        inv.runtime_exited(
            EXIT_ERROR,
            "Runtime exited with error: exit status 7",
            false,
        );
        let log = log.lock().unwrap();
        let GuestMessage::InvokeError(e) = &log[1] else {
            panic!("expected InvokeError, got {log:?}")
        };
        assert_eq!(e.request_id, "r");
        assert_eq!(e.error_type, "Runtime.ExitError");
        let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            body["errorMessage"],
            "RequestId: r Error: Runtime exited with error: exit status 7"
        );
        assert!(matches!(log[2], GuestMessage::RuntimeExited(_)));
    }

    #[test]
    fn exit_before_first_next_is_an_init_error_once() {
        let (inv, log) = recorder();
        inv.init_error("Runtime.Custom".into(), b"{}".to_vec())
            .unwrap();
        assert!(inv.init_error("X".into(), vec![]).is_err());
        inv.runtime_exited(
            EXIT_ERROR,
            "Runtime exited with error: exit status 1",
            false,
        );
        let log = log.lock().unwrap();
        assert_eq!(
            log.len(),
            2,
            "the runtime's own init error is not duplicated: {log:?}"
        );
        assert!(matches!(&log[0], GuestMessage::InitError(e) if e.error_type == "Runtime.Custom"));
    }

    #[test]
    fn invokes_after_exit_or_failed_init_are_answered_at_once() {
        let (inv, log) = recorder();
        inv.push_invoke(invoke("queued"));
        inv.runtime_exited(
            EXIT_ERROR,
            "Runtime exited with error: exit status 2",
            false,
        );
        inv.push_invoke(invoke("late"));
        let log = log.lock().unwrap();
        let ids: Vec<&str> = log
            .iter()
            .filter_map(|m| match m {
                GuestMessage::InvokeError(e) if e.error_type == "Runtime.ExitError" => {
                    Some(e.request_id.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec!["queued", "late"]);

        let (inv, log) = recorder();
        inv.push_invoke(invoke("before"));
        inv.init_error("Runtime.ImportModuleError".into(), b"{}".to_vec())
            .unwrap();
        inv.push_invoke(invoke("after"));
        let log = log.lock().unwrap();
        let errs: Vec<(&str, &str)> = log
            .iter()
            .filter_map(|m| match m {
                GuestMessage::InvokeError(e) => {
                    Some((e.request_id.as_str(), e.error_type.as_str()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            errs,
            vec![
                ("before", "Runtime.ImportModuleError"),
                ("after", "Runtime.ImportModuleError")
            ]
        );
    }

    fn ext_event(next: ExtNext) -> Option<serde_json::Value> {
        let event = match next {
            ExtNext::Ready(e) => e,
            ExtNext::Wait(mut rx) => rx.try_recv().ok()?,
        };
        serde_json::from_slice(&event.body).ok()
    }

    #[test]
    fn extensions_gate_init_and_each_invocation() {
        let (inv, log) = recorder();
        let subs = Subscriptions {
            invoke: true,
            shutdown: true,
        };
        let (id, _) = inv.register_extension("ext-a", subs).unwrap();
        assert!(
            inv.register_extension("ext-a", subs).is_err(),
            "names are unique"
        );
        inv.close_registration();
        assert_eq!(
            inv.register_extension("late", subs).unwrap_err(),
            ApiError::RegistrationClosed
        );
        // The runtime is ready but the extension has not called next: init not done.
        let mut runtime_rx = inv.next().unwrap();
        assert!(log.lock().unwrap().is_empty());
        inv.push_invoke(invoke("r1"));
        assert!(
            runtime_rx.try_recv().is_err(),
            "no invoke before init completes"
        );
        // The extension's first next completes init and releases the invoke to both.
        let ev = ext_event(inv.extension_next(&id).unwrap()).expect("INVOKE event");
        assert_eq!(ev["eventType"], "INVOKE");
        assert_eq!(ev["requestId"], "r1");
        assert_eq!(runtime_rx.try_recv().unwrap().request_id, "r1");
        assert_eq!(log.lock().unwrap().as_slice(), &[GuestMessage::InitDone]);
        // The runtime answers, but the next invoke waits for the extension.
        inv.claim_response("r1", false).unwrap();
        inv.push_invoke(invoke("r2"));
        let mut runtime_rx = inv.next().unwrap();
        assert!(
            runtime_rx.try_recv().is_err(),
            "extension still busy with r1"
        );
        let ev = ext_event(inv.extension_next(&id).unwrap()).expect("second INVOKE");
        assert_eq!(ev["requestId"], "r2");
        assert_eq!(runtime_rx.try_recv().unwrap().request_id, "r2");
        // SHUTDOWN is queued for the busy extension.
        assert_eq!(inv.shutdown_extensions("spindown", 42), 1);
        let ev = ext_event(inv.extension_next(&id).unwrap()).expect("SHUTDOWN");
        assert_eq!(ev["eventType"], "SHUTDOWN");
        assert_eq!(ev["deadlineMs"], 42);
        assert_eq!(
            inv.extension_next("bogus").err(),
            Some(ApiError::ExtensionForbidden)
        );
    }
}
