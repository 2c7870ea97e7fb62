//! Event-loop integration: the device as an `event-manager` subscriber.
//!
//! `init` registers the activation eventfd and the muxer's epoll fd (host clients are
//! served, and time out, even before the guest driver is up). The activation event
//! registers the three queue eventfds.

use event_manager::{Error as EmError, EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::defs::{EVQ, RXQ, TXQ};
use super::device::Vsock;
use super::metrics;

const TOKEN_ACTIVATE: u32 = 0;
const TOKEN_RXQ: u32 = 1;
const TOKEN_TXQ: u32 = 2;
const TOKEN_EVQ: u32 = 3;
const TOKEN_BACKEND: u32 = 4;

impl Vsock {
    fn register(&mut self, ops: &mut EventOps, ev: Events) {
        match ops.add(ev) {
            Ok(()) => {}
            // Same eventfd handed back after a reset: refresh its token.
            Err(EmError::FdAlreadyRegistered) => {
                if ops.modify(ev).is_err() {
                    metrics::inc(&self.metrics_ref().device_errors);
                }
            }
            Err(e) => {
                log::error!("vsock: registering fd {}: {e}", ev.fd());
                metrics::inc(&self.metrics_ref().device_errors);
            }
        }
    }

    fn metrics_ref(&self) -> std::sync::Arc<metrics::VsockMetrics> {
        self.metrics()
    }

    fn on_activate(&mut self, ops: &mut EventOps) {
        // Non-blocking eventfd: an error just means there was nothing to read.
        let _ = self.activate_evt.read();
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let regs: Vec<Events> = [(RXQ, TOKEN_RXQ), (TXQ, TOKEN_TXQ), (EVQ, TOKEN_EVQ)]
            .iter()
            .map(|&(q, tok)| Events::with_data(&active.queue_evts[q], tok, EventSet::IN))
            .collect();
        self.registered_queue_fds = regs.iter().map(|e| e.fd()).collect();
        for ev in regs {
            self.register(ops, ev);
        }
        // The guest may have queued buffers before we listened.
        self.process_tx();
        self.process_all();
        self.process_evq();
    }

    fn drain_queue_evt(&self, q: usize) -> bool {
        match self.active.as_ref() {
            Some(a) => {
                let _ = a.queue_evts[q].read();
                true
            }
            None => false,
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        let act = Events::with_data(&self.activate_evt, TOKEN_ACTIVATE, EventSet::IN);
        self.register(ops, act);
        let backend = Events::with_data_raw(self.backend_fd(), TOKEN_BACKEND, EventSet::IN);
        self.register(ops, backend);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_ACTIVATE => self.on_activate(ops),
            TOKEN_RXQ => {
                if self.drain_queue_evt(RXQ) {
                    self.process_all();
                }
            }
            TOKEN_TXQ => {
                if self.drain_queue_evt(TXQ) {
                    self.process_tx();
                    self.process_all();
                }
            }
            TOKEN_EVQ => {
                if self.drain_queue_evt(EVQ) {
                    self.process_evq();
                }
            }
            TOKEN_BACKEND => self.process_backend(),
            other => log::warn!("vsock: unexpected event token {other}"),
        }
    }
}
