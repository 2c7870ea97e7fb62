//! The devices a VM is built with, the same for a booted and a restored one: the
//! serial port, i8042 and boot timer, the virtio drives and vsock behind virtio-mmio,
//! the exit watcher, and the event loop that drives them.

use super::*;

struct Devices<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemory,
    pio: Bus,
    mmio: Bus,
    em: EventManager<Subscriber>,
    slots: Vec<MmioSlot>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
}

fn irqfd(vm: &VmFd, gsi: u32) -> Result<EventFd, BuildError> {
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|source| BuildError::Irqfd { gsi, source })?;
    Ok(evt)
}

impl Devices<'_> {
    /// Puts a virtio device behind the next virtio-mmio window and into the event loop.
    fn attach_virtio(
        &mut self,
        device: Arc<Mutex<dyn VirtioDevice>>,
        subscriber: Subscriber,
    ) -> Result<(), BuildError> {
        let index = self.slots.len() as u64;
        let irq = VIRTIO_IRQ_BASE + index as u32;
        if irq > VIRTIO_IRQ_MAX {
            return Err(BuildError::TooManyDevices);
        }
        let base = VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SIZE;
        let interrupt = Arc::new(MmioInterrupt::new(irqfd(self.vm, irq)?));
        let transport = MmioTransport::new(self.mem.clone(), device, interrupt)?;
        let addr = base + NOTIFY_OFFSET;
        for (q, evt) in transport.queue_evts().iter().enumerate() {
            self.vm
                .register_ioevent(evt, &IoEventAddress::Mmio(addr), q as u32)
                .map_err(|source| BuildError::Ioeventfd { addr, source })?;
        }
        let transport = Arc::new(Mutex::new(transport));
        self.transports.push(transport.clone());
        let on_bus: Arc<Mutex<dyn BusDevice>> = transport;
        self.mmio.insert(base, VIRTIO_MMIO_SIZE, on_bus)?;
        self.em.add_subscriber(subscriber);
        self.slots.push(MmioSlot {
            base,
            size: VIRTIO_MMIO_SIZE,
            irq,
        });
        Ok(())
    }
}

fn serial_out(cfg: &SerialOutConfig) -> Result<serial::SerialOut, BuildError> {
    match cfg {
        SerialOutConfig::Stdout => Ok(serial::SerialOut::stdout()),
        SerialOutConfig::File { path, cap } => {
            let f = File::create(path).map_err(|source| BuildError::SerialOut {
                path: path.clone(),
                source,
            })?;
            Ok(serial::SerialOut::file(f, *cap))
        }
    }
}

/// Attaches the vsock device if configured; returns its counters for the exit report.
fn attach_vsock(
    dev: &mut Devices<'_>,
    cfg: &VmConfig,
) -> Result<Option<Arc<VsockMetrics>>, BuildError> {
    let Some(v) = &cfg.vsock else {
        return Ok(None);
    };
    let vsock =
        Vsock::new(v.cid, v.uds_path.clone()).map_err(|e| BuildError::Vsock(e.to_string()))?;
    let metrics = vsock.metrics();
    let vsock = Arc::new(Mutex::new(vsock));
    dev.attach_virtio(vsock.clone(), vsock)?;
    Ok(Some(metrics))
}

/// Creates (truncates) the metrics file now, so a bad path fails before the guest runs.
fn metrics_out(cfg: &VmConfig) -> Result<Option<File>, BuildError> {
    let Some(path) = &cfg.metrics_path else {
        return Ok(None);
    };
    File::create(path)
        .map(Some)
        .map_err(|source| BuildError::MetricsFile {
            path: path.clone(),
            source,
        })
}

fn open_drive(d: &DriveConfig) -> Result<Block, BlockError> {
    match &d.backing {
        DriveBacking::File(path) => Block::new(path, d.read_only),
        DriveBacking::ImageLink(fd) => {
            // SAFETY: `VmConfig::validate` checked that the descriptor is an open socket
            // given for no other use; this drive takes ownership of it, once.
            let stream = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(*fd) };
            Block::from_image_link(stream)
        }
    }
}

/// The serial port, new or resumed from a snapshot.
fn serial_device(
    vm: &VmFd,
    cfg: &VmConfig,
    resumed: Option<&SerialSnapshot>,
) -> Result<Arc<Mutex<serial::SerialDevice>>, BuildError> {
    let irq = EventFdTrigger(irqfd(vm, SERIAL_IRQ)?);
    let out = serial_out(&cfg.serial_out)?;
    let dev = match resumed {
        Some(state) => serial::SerialDevice::from_snapshot(irq, out, state)
            .map_err(|e| BuildError::Snapshot(SnapshotError::Serial(e)))?,
        None => serial::SerialDevice::new(irq, out),
    };
    Ok(Arc::new(Mutex::new(dev)))
}

/// Attaches the legacy devices and the boot timer; returns the i8042 and the reset
/// eventfd its CPU-reset command writes to.
fn attach_legacy(
    dev: &mut Devices<'_>,
    serial: &Arc<Mutex<serial::SerialDevice>>,
    serial_stdin: bool,
) -> Result<(Arc<Mutex<I8042>>, EventFd), BuildError> {
    dev.pio.insert(u64::from(COM1_PORT), 8, serial.clone())?;
    if serial_stdin {
        dev.em
            .add_subscriber(Arc::new(Mutex::new(serial::SerialInput::new(
                serial.clone(),
            ))));
    }
    let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    let reset_trigger = reset_evt.try_clone().map_err(BuildError::EventFd)?;
    let i8042 = Arc::new(Mutex::new(I8042::new(
        EventFdTrigger(reset_trigger),
        EventFdTrigger(irqfd(dev.vm, I8042_IRQ)?),
    )));
    dev.pio.insert(u64::from(I8042_PORT), 5, i8042.clone())?;
    dev.mmio.insert(
        BOOT_TIMER_ADDR,
        BOOT_TIMER_SIZE,
        Arc::new(Mutex::new(BootTimer::new(crate::logger::start_instant()))),
    )?;
    Ok((i8042, reset_evt))
}

/// Devices, buses and the event loop for `core`'s VM; `resumed_serial` is the serial
/// port's state when the VM is restored from a snapshot.
pub(crate) fn assemble(
    cfg: &VmConfig,
    core: &VmCore,
    signal_fd: std::os::fd::OwnedFd,
    pvm: bool,
    resumed_serial: Option<&SerialSnapshot>,
) -> Result<Assembly, BuildError> {
    let metrics_out = metrics_out(cfg)?;
    let blocks = cfg
        .drives
        .iter()
        .map(|d| open_drive(d).map(|b| Arc::new(Mutex::new(b))))
        .collect::<Result<Vec<_>, _>>()?;
    let snapshot = cfg
        .snapshot
        .as_ref()
        .map(|s| SnapshotSetup::open(s, &core.kvm))
        .transpose()?;
    let exit = Arc::new(ExitNotifier::new().map_err(BuildError::EventFd)?);
    let mut dev = Devices {
        vm: &core.vm,
        mem: &core.mem,
        pio: Bus::new(),
        mmio: Bus::new(),
        em: EventManager::new()?,
        slots: Vec::new(),
        transports: Vec::new(),
    };
    let serial = serial_device(&core.vm, cfg, resumed_serial)?;
    let (i8042, reset_evt) = attach_legacy(&mut dev, &serial, cfg.serial_stdin)?;
    for b in &blocks {
        dev.attach_virtio(b.clone(), b.clone())?;
    }
    let vsock_metrics = attach_vsock(&mut dev, cfg)?;
    dev.em.add_subscriber(Arc::new(Mutex::new(ExitWatcher::new(
        exit.clone(),
        reset_evt,
        signal_fd,
        snapshot.as_ref().map(|s| s.requested.clone()),
    ))));
    let shared = VcpuShared {
        pio: Arc::new(dev.pio),
        mmio: Arc::new(dev.mmio),
        exit: exit.clone(),
        pvm,
        snapshots: snapshot.as_ref().map(SnapshotSetup::vcpu_support),
    };
    Ok(Assembly {
        em: dev.em,
        exit,
        serial,
        i8042,
        blocks,
        transports: dev.transports,
        vsock_metrics,
        metrics_out,
        snapshot,
        slots: dev.slots,
        shared,
    })
}
