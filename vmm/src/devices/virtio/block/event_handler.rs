//! Event-loop side of virtio-blk: activation first, then queue notifications.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::Block;

const TOKEN_ACTIVATE: u32 = 0;
const TOKEN_QUEUE: u32 = 1;

impl Block {
    fn on_activate(&mut self, ops: &mut EventOps) {
        let _ = self.activate_evt.read();
        let Some(evt) = self.queue_evt.as_ref() else {
            return;
        };
        // A re-activation after reset registers the same ioeventfd file again.
        let ev = Events::with_data(evt, TOKEN_QUEUE, EventSet::IN);
        let _ = ops.remove(ev);
        if let Err(e) = ops.add(ev) {
            log::error!("virtio-blk: cannot watch the queue eventfd: {e}");
            return;
        }
        // The driver may have queued requests before we started listening.
        self.process_queue();
    }
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.activate_evt,
            TOKEN_ACTIVATE,
            EventSet::IN,
        )) {
            log::error!("virtio-blk: cannot watch the activation eventfd: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_ACTIVATE => self.on_activate(ops),
            TOKEN_QUEUE => {
                if let Some(evt) = &self.queue_evt {
                    let _ = evt.read();
                }
                self.process_queue();
            }
            other => crate::rl_log!(warn, "virtio-blk: unexpected event token {other}"),
        }
    }
}
