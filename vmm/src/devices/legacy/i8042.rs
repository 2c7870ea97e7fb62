//! Minimal i8042 keyboard controller at ports 0x60 (data) and 0x64 (status/command).
//!
//! Enough for Linux to probe it quickly and, most importantly, to reboot: with `reboot=k`
//! the guest writes command 0xfe ("pulse reset line") which ends the VMM with exit code 0.

use std::collections::VecDeque;

use vm_superio::Trigger;

use crate::devices::bus::BusDevice;
use crate::devices::EventFdTrigger;

const OFFSET_DATA: u64 = 0;
const OFFSET_STATUS: u64 = 4;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_OUTBUF: u8 = 0xd2;
const CMD_WRITE_AUX: u8 = 0xd4;
pub const CMD_RESET_CPU: u8 = 0xfe;

const SB_OUT_FULL: u8 = 0x01;
const SB_SYSTEM: u8 = 0x04;
const SB_LAST_WAS_CMD: u8 = 0x08;

const CTR_KBD_INT: u8 = 0x01;
const CTR_POST_OK: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;
const CTR_AUX_DISABLED: u8 = 0x20;

const KBD_ACK: u8 = 0xfa;
const KBD_RESET: u8 = 0xff;
const KBD_SELF_TEST_OK: u8 = 0xaa;
const SELF_TEST_OK: u8 = 0x55;
const OUTBUF_CAP: usize = 16;

pub struct I8042 {
    reset: EventFdTrigger,
    kbd_irq: EventFdTrigger,
    ctr: u8,
    status: u8,
    pending_cmd: Option<u8>,
    outbuf: VecDeque<u8>,
}

/// What a snapshot keeps of the controller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    pub ctr: u8,
    pub status: u8,
    pub pending_cmd: Option<u8>,
    pub outbuf: Vec<u8>,
}

impl I8042 {
    pub fn state(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            status: self.status,
            pending_cmd: self.pending_cmd,
            outbuf: self.outbuf.iter().copied().collect(),
        }
    }

    /// Takes over a snapshot's registers; an output buffer past its bound is cut.
    pub fn restore(&mut self, state: &I8042State) {
        self.ctr = state.ctr;
        self.status = state.status;
        self.pending_cmd = state.pending_cmd;
        self.outbuf = state.outbuf.iter().copied().take(OUTBUF_CAP).collect();
    }

    pub fn new(reset: EventFdTrigger, kbd_irq: EventFdTrigger) -> Self {
        Self {
            reset,
            kbd_irq,
            ctr: CTR_KBD_INT | CTR_POST_OK,
            status: SB_SYSTEM,
            pending_cmd: None,
            outbuf: VecDeque::with_capacity(OUTBUF_CAP),
        }
    }

    fn push(&mut self, byte: u8) {
        if self.outbuf.len() < OUTBUF_CAP {
            self.outbuf.push_back(byte);
        }
    }

    fn push_kbd(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.push(*b);
        }
        if self.ctr & CTR_KBD_INT != 0 {
            if let Err(e) = self.kbd_irq.trigger() {
                crate::rl_log!(warn, "i8042: keyboard irq: {e}");
            }
        }
    }

    fn trigger_reset(&mut self) {
        log::info!("i8042: guest requested a CPU reset");
        if let Err(e) = self.reset.trigger() {
            log::error!("i8042: cannot signal reset: {e}");
        }
    }

    fn command(&mut self, cmd: u8) {
        self.status |= SB_LAST_WAS_CMD;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUTBUF | CMD_WRITE_AUX => {
                self.pending_cmd = Some(cmd)
            }
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLED,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLED,
            // Non-zero: "clock line stuck", i.e. no usable aux port.
            CMD_AUX_TEST => self.push(0x01),
            CMD_SELF_TEST => self.push(SELF_TEST_OK),
            CMD_KBD_TEST => self.push(0x00),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLED,
            // Output port: bit 0 = reset line (active low) high, bit 1 = A20 enabled.
            CMD_READ_OUTP => self.push(0x03),
            CMD_RESET_CPU => self.trigger_reset(),
            other => crate::rl_log!(debug, "i8042: ignoring command {other:#x}"),
        }
    }

    fn data(&mut self, value: u8) {
        self.status &= !SB_LAST_WAS_CMD;
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => self.ctr = value,
            Some(CMD_WRITE_KBD_OUTBUF) => self.push_kbd(&[value]),
            // Clearing bit 0 of the output port asserts the CPU reset line.
            Some(CMD_WRITE_OUTP) if value & 1 == 0 => self.trigger_reset(),
            Some(_) => {}
            None if value == KBD_RESET => self.push_kbd(&[KBD_ACK, KBD_SELF_TEST_OK]),
            None => self.push_kbd(&[KBD_ACK]),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            OFFSET_DATA => self.outbuf.pop_front().unwrap_or(0),
            OFFSET_STATUS => {
                let full = if self.outbuf.is_empty() {
                    0
                } else {
                    SB_OUT_FULL
                };
                self.status | full
            }
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            OFFSET_DATA => self.data(value),
            OFFSET_STATUS => self.command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    fn dev() -> (I8042, EventFd, EventFd) {
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let d = I8042::new(
            EventFdTrigger(reset.try_clone().unwrap()),
            EventFdTrigger(irq.try_clone().unwrap()),
        );
        (d, reset, irq)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_signals_exit() {
        let (mut d, reset, _) = dev();
        assert!(reset.read().is_err()); // nothing pending (non-blocking)
        d.write(OFFSET_STATUS, &[CMD_RESET_CPU]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn output_port_reset_line() {
        let (mut d, reset, _) = dev();
        d.write(OFFSET_STATUS, &[CMD_WRITE_OUTP]);
        d.write(OFFSET_DATA, &[0x02]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn ctr_round_trip_and_status() {
        let (mut d, _, _) = dev();
        assert_eq!(rd(&mut d, OFFSET_STATUS) & SB_OUT_FULL, 0);
        d.write(OFFSET_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFFSET_DATA, &[0x47]);
        d.write(OFFSET_STATUS, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, OFFSET_STATUS) & SB_OUT_FULL, SB_OUT_FULL);
        assert_eq!(rd(&mut d, OFFSET_DATA), 0x47);
        assert_eq!(rd(&mut d, OFFSET_STATUS) & SB_OUT_FULL, 0);
        d.write(OFFSET_STATUS, &[CMD_SELF_TEST]);
        assert_eq!(rd(&mut d, OFFSET_DATA), SELF_TEST_OK);
    }

    #[test]
    fn keyboard_reset_acks_and_interrupts() {
        let (mut d, _, irq) = dev();
        d.write(OFFSET_DATA, &[KBD_RESET]);
        assert_eq!(rd(&mut d, OFFSET_DATA), KBD_ACK);
        assert_eq!(rd(&mut d, OFFSET_DATA), KBD_SELF_TEST_OK);
        assert!(irq.read().unwrap() >= 1);
        // The buffer is bounded.
        for _ in 0..100 {
            d.write(OFFSET_DATA, &[0xf4]);
        }
        assert_eq!(d.outbuf.len(), OUTBUF_CAP);
        d.write(OFFSET_DATA, &[]);
    }
}
