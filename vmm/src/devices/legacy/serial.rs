//! COM1: a vm-superio 8250 UART with its interrupt on an irqfd (IRQ 4), output to stdout
//! or to a size-capped file, optional input from stdin (fed by the event loop).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;
use vmm_sys_util::epoll::EventSet;

use crate::devices::bus::BusDevice;
use crate::devices::EventFdTrigger;
use crate::metrics::{add, inc, VMM_METRICS};

/// Where guest console output goes. Writes past `cap` bytes are dropped so a chatty guest
/// cannot fill the host disk.
pub struct SerialOut {
    sink: Box<dyn Write + Send>,
    written: u64,
    cap: Option<u64>,
    warned: bool,
}

impl SerialOut {
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()), None)
    }

    pub fn file(file: File, cap: u64) -> Self {
        Self::new(Box::new(file), Some(cap))
    }

    pub fn new(sink: Box<dyn Write + Send>, cap: Option<u64>) -> Self {
        Self {
            sink,
            written: 0,
            cap,
            warned: false,
        }
    }
}

impl Write for SerialOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let allowed = match self.cap {
            Some(cap) => cap.saturating_sub(self.written).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        if allowed < buf.len() {
            add(
                &VMM_METRICS.serial_dropped_bytes,
                (buf.len() - allowed) as u64,
            );
            if !self.warned {
                self.warned = true;
                log::warn!("serial output reached its size cap; dropping further output");
            }
        }
        if allowed > 0 {
            self.sink.write_all(&buf[..allowed])?;
            self.written += allowed as u64;
        }
        // Report everything consumed: dropping is deliberate, not an error.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

pub type Uart = Serial<EventFdTrigger, NoEvents, SerialOut>;

pub struct SerialDevice {
    uart: Uart,
}

/// A snapshot's UART input holds more bytes than the UART's FIFO.
#[derive(Debug, thiserror::Error)]
#[error("serial input FIFO of {0} bytes is longer than the UART's")]
pub struct FifoTooLong(pub usize);

/// The UART's registers and input FIFO, as a snapshot keeps them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialSnapshot {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialSnapshot> for SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

impl SerialDevice {
    pub fn new(irq: EventFdTrigger, out: SerialOut) -> Self {
        Self {
            uart: Serial::new(irq, out),
        }
    }

    /// A UART resumed from a snapshot; an input FIFO longer than the UART's is refused.
    pub fn from_snapshot(
        irq: EventFdTrigger,
        out: SerialOut,
        state: &SerialSnapshot,
    ) -> Result<Self, FifoTooLong> {
        Serial::from_state(&SerialState::from(state), irq, NoEvents, out)
            .map(|uart| Self { uart })
            .map_err(|_| FifoTooLong(state.in_buffer.len()))
    }

    pub fn snapshot(&self) -> SerialSnapshot {
        self.uart.state().into()
    }

    /// Queues host input for the guest; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(e) => {
                inc(&VMM_METRICS.serial_errors);
                crate::rl_log!(warn, "serial input: {e:?}");
                0
            }
        }
    }

    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset > 7 {
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset > 7 {
            return;
        }
        if let Err(e) = self.uart.write(offset as u8, data[0]) {
            inc(&VMM_METRICS.serial_errors);
            crate::rl_log!(warn, "serial write: {e:?}");
        }
    }
}

/// Feeds stdin into the UART from the event loop.
pub struct SerialInput {
    serial: Arc<Mutex<SerialDevice>>,
    stdin: std::io::Stdin,
}

impl SerialInput {
    pub fn new(serial: Arc<Mutex<SerialDevice>>) -> Self {
        Self {
            serial,
            stdin: std::io::stdin(),
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.stdin, EventSet::IN)) {
            log::warn!("serial: cannot watch stdin: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let fd = self.stdin.as_raw_fd();
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes and `fd` is stdin,
        // open for the whole process lifetime. A raw read avoids std's internal buffering.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 || events.event_set().contains(EventSet::HANG_UP) {
            // EOF or error: stop watching so a closed stdin does not spin the loop.
            let _ = ops.remove(Events::new(&self.stdin, EventSet::IN));
            return;
        }
        let mut s = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let taken = s.enqueue_input(&buf[..n as usize]);
        if taken < n as usize {
            crate::rl_log!(
                debug,
                "serial: guest FIFO full, dropped {} input bytes",
                n as usize - taken
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn dev(cap: Option<u64>) -> (SerialDevice, Shared, EventFd) {
        let out = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let d = SerialDevice::new(
            EventFdTrigger(irq.try_clone().unwrap()),
            SerialOut::new(Box::new(out.clone()), cap),
        );
        (d, out, irq)
    }

    #[test]
    fn thr_writes_reach_output_and_cap_applies() {
        let (mut d, out, _irq) = dev(Some(3));
        for b in b"hello" {
            d.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hel");
    }

    #[test]
    fn input_raises_interrupt_when_enabled() {
        let (mut d, _out, irq) = dev(None);
        d.write(1, &[0x01]); // IER: received data available
        assert_eq!(d.enqueue_input(b"ab"), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut b = [0u8];
        d.read(5, &mut b); // LSR: data ready
        assert_eq!(b[0] & 1, 1);
        d.read(0, &mut b);
        assert_eq!(b[0], b'a');
    }

    #[test]
    fn bad_access_sizes_are_ignored() {
        let (mut d, out, _irq) = dev(None);
        d.write(0, b"xy");
        let mut b = [0u8; 2];
        d.read(0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        assert!(out.0.lock().unwrap().is_empty());
    }
}
