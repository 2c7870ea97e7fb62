//! Starting a sandbox's VM: its host folder, the jail (binds, limits), the vmm's
//! arguments, and the session with guest-init once it connects; booted, booted to be
//! snapshotted, or resumed from a snapshot (`snapstart`).

use super::*;

/// (host path, path in the jail) pairs.
type Binds = Vec<(PathBuf, PathBuf)>;

/// How a sandbox's VM starts.
pub(super) enum Launch<'a> {
    Boot,
    /// Booted to be snapshotted after Init (the first cold start of a SnapStart version).
    BootForSnapshot,
    /// Resumed from the version's snapshot.
    Restore(&'a Snapshot),
}

/// A sandbox's own files on the host: removed with `dir` when the sandbox goes.
pub(super) struct SandboxFiles {
    pub(super) dir: DirGuard,
    /// None for a container image, which the monitor reads through its chunk link.
    pub(super) code_image: Option<PathBuf>,
    pub(super) opt_image: Option<PathBuf>,
}

/// A new, empty host folder for sandbox `id`, with its socket subfolder.
pub(super) fn files_dir(run_root: &Path, id: &str) -> Result<DirGuard, SandboxError> {
    let files = DirGuard(run_root.join(format!("{id}.files")));
    let _ = std::fs::remove_dir_all(&files.0);
    std::fs::create_dir_all(files.0.join("sock"))
        .map_err(|e| start_err(format!("sandbox dir: {e}")))?;
    // The jail binds the code image and socket dir as its root (group JAIL_ROOT_GID);
    // other host users, who may learn the id from the jail's mountinfo, cannot
    // traverse to the code or the guest's socket.
    chown(&files.0, 0, jail::JAIL_ROOT_GID)?;
    chmod(&files.0, 0o710)?;
    Ok(files)
}

impl MicroVmBackend {
    /// The sandbox's host directory (vsock socket dir, a code image built from a code
    /// directory when the function has no image, an image of its merged layers).
    async fn sandbox_files(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
    ) -> Result<SandboxFiles, SandboxError> {
        let files = files_dir(&self.cfg.run_root, id)?;
        let code_image = match (&spec.image, &spec.code_image, &spec.code_dir) {
            (Some(_), _, _) => None,
            (None, Some(img), _) => Some(img.clone()),
            (None, None, Some(dir)) => {
                Some(code_image::image_of(dir, files.0.join("code.ext4")).await?)
            }
            (None, None, None) => return Err(start_err("function has no code")),
        };
        let opt_image = match &spec.layers.dir {
            Some(dir) => Some(code_image::image_of(dir, files.0.join("opt.ext4")).await?),
            None => None,
        };
        Ok(SandboxFiles {
            dir: files,
            code_image,
            opt_image,
        })
    }

    /// Read-only files the VMM sees in its jail: a restored VM gets its snapshot's
    /// files instead of the kernel.
    fn binds(
        &self,
        rootfs: PathBuf,
        files: &SandboxFiles,
        how: &Launch<'_>,
    ) -> Vec<(PathBuf, PathBuf)> {
        let l = &self.cfg.launcher;
        let mut ro_binds = vec![
            (l.vmm.clone(), PathBuf::from(launcher::VMM)),
            (rootfs, PathBuf::from(launcher::ROOTFS)),
        ];
        match how {
            Launch::Restore(snap) => ro_binds.extend([
                (snap.state.clone(), PathBuf::from(launcher::SNAPSHOT_STATE)),
                (snap.mem.clone(), PathBuf::from(launcher::SNAPSHOT_MEM)),
            ]),
            _ => ro_binds.push((l.kernel.clone(), PathBuf::from(launcher::KERNEL))),
        }
        if let Some(code) = &files.code_image {
            ro_binds.push((code.clone(), PathBuf::from(launcher::CODE)));
        }
        if let Some(opt) = &files.opt_image {
            ro_binds.push((opt.clone(), PathBuf::from(launcher::OPT)));
        }
        if self.vmm_is_dynamic {
            ro_binds.push((PathBuf::from("/usr"), PathBuf::from("/usr")));
        }
        ro_binds
    }

    fn jail_config(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        ro_binds: Vec<(PathBuf, PathBuf)>,
        rw_binds: Vec<(PathBuf, PathBuf)>,
        host_id_base: u32,
        cpus: &Option<CpuLease>,
    ) -> JailConfig {
        JailConfig {
            rootfs: None,
            code: None,
            ro_binds,
            rw_binds,
            devices: Vec::new(),
            run_dir: self.cfg.run_root.join(id),
            tmp_size_mib: 16,
            hostname: id.to_string(),
            uid: jail::SANDBOX_UID,
            gid: jail::SANDBOX_UID,
            keep_caps: 0,
            host_id_base,
            limits: Some(CgroupLimits {
                memory_bytes: u64::from(spec.memory_mib + self.cfg.monitor_overhead_mib) << 20,
                pids_max: 256,
                cpu_millicores: None,
            }),
            seccomp: self.cfg.seccomp,
            loopback_up: false,
            // The VMM is PID 1 of its jail: nothing of the worker (a clone that never
            // execs) stays in the sandbox. It forks nothing, so nothing needs reaping.
            reaper: false,
            cpus: cpus.as_ref().map(|l| l.cpus().to_vec()).unwrap_or_default(),
        }
    }

    /// The VMM's arguments for `how`.
    fn vmm_args(
        &self,
        spec: &FunctionVersionSpec,
        files: &SandboxFiles,
        how: &Launch<'_>,
        image: bool,
    ) -> Vec<String> {
        let shape = VmShape {
            mem_mib: spec.memory_mib,
            vcpus: self.cfg.vcpus,
            extra_cmdline: self.cfg.extra_cmdline.clone(),
            opt_drive: files.opt_image.is_some(),
            image_drive: image,
        };
        let l = &self.cfg.launcher;
        let mut args = match how {
            Launch::Boot => l.args(&shape),
            Launch::BootForSnapshot => l.snapshot_args(&shape),
            // The probed flags choose what the guest boots with; a restore has it.
            Launch::Restore(_) => return l.restore_args(&shape),
        };
        args.extend(self.probed_flags.iter().cloned());
        args
    }

    /// The folders the jail may write, bound into it, and (to be snapshotted) the one the
    /// vmm writes its snapshot into, owned by the sandbox's host uid.
    fn writable_dirs(
        &self,
        sock_dir: &Path,
        how: &Launch<'_>,
        id: &str,
        id_base: u32,
    ) -> Result<(Binds, Option<DirGuard>), SandboxError> {
        let sandbox_owned = |dir: &Path| {
            chown(
                dir,
                id_base + jail::SANDBOX_UID,
                jail::host_gid(id_base, jail::SANDBOX_UID),
            )
        };
        sandbox_owned(sock_dir)?;
        let mut rw_binds = vec![(sock_dir.to_owned(), PathBuf::from(launcher::VSOCK_DIR))];
        let snapshot_out = match how {
            Launch::BootForSnapshot => {
                let out = self
                    .snapshots
                    .scratch(id)
                    .map_err(|e| start_err(format!("snapshot folder: {e}")))?;
                sandbox_owned(&out.0)?;
                rw_binds.push((out.0.clone(), PathBuf::from(launcher::SNAPSHOT_DIR)));
                Some(out)
            }
            _ => None,
        };
        Ok((rw_binds, snapshot_out))
    }

    /// The session with the guest-init that connected: Init marked `snap-start` for a
    /// VM to be snapshotted, Restore in place of Init for a resumed one.
    async fn session(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        how: &Launch<'_>,
        stream: tokio::net::UnixStream,
        serial: &StderrTail,
    ) -> Result<Session, SandboxError> {
        let conn = WireConn::handshake(stream)
            .await
            .map_err(|e| start_err(format!("handshake: {e}: {}", serial.text())))?;
        let mut init = init_message(spec, &self.cfg.identity, id);
        let arn = function_arn(spec, &self.cfg.identity);
        Ok(match how {
            Launch::Restore(_) => Session::restored(conn, init, arn),
            Launch::BootForSnapshot => {
                init.initialization_type = "snap-start".into();
                Session::new(conn, init, arn)
            }
            Launch::Boot => Session::new(conn, init, arn),
        })
    }

    /// Starts a sandbox's VM: booted, booted to be snapshotted, or restored.
    pub(super) async fn launch(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        how: &Launch<'_>,
    ) -> Result<VmSandbox, SandboxError> {
        let t0 = Instant::now();
        let image = image_link::lazy_image(spec)?;
        let rootfs = self.rootfs_for(spec, image.is_some())?;
        let files = match how {
            Launch::Restore(snap) => snapstart::restore_files(&self.cfg.run_root, id, snap)?,
            _ => self.sandbox_files(spec, id).await?,
        };
        let (image_link, image_fd) = match image {
            Some(image) => {
                let (link, fd) = image_link::start(image, id)?;
                (Some(link), Some((fd, launcher::IMAGE_FD)))
            }
            None => (None, None),
        };
        let lease = self.uids.acquire().map_err(|e| start_err(e.to_string()))?;
        let id_base = lease.host_base();
        let sock_dir = files.dir.0.join("sock");
        let (rw_binds, snapshot_out) = self.writable_dirs(&sock_dir, how, id, id_base)?;
        // guest-init's connection arrives here: listen before the VM starts.
        let guest_sock = sock_dir.join(format!("vm.vsock_{GUEST_PORT}"));
        let listener =
            UnixListener::bind(&guest_sock).map_err(|e| start_err(format!("bind: {e}")))?;
        chmod(&guest_sock, 0o777)?;
        let args = self.vmm_args(spec, &files, how, image_fd.is_some());
        let cpus = self
            .cfg
            .place_cpus
            .then(|| self.placer.lease(self.cfg.vcpus as usize))
            .flatten();
        let binds = self.binds(rootfs, &files, how);
        let jcfg = self.jail_config(spec, id, binds, rw_binds, id_base, &cpus);
        let cmd = JailCommand {
            exe: PathBuf::from(launcher::VMM),
            args,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            stdout: Some(Stdio::Pipe),
            stderr: Some(Stdio::Pipe),
            fds: std::iter::once((open_kvm()?, launcher::KVM_FD))
                .chain(image_fd)
                .collect(),
        };
        let mut proc = spawn_jailed(jcfg, cmd, self.cgroups.clone(), lease).await?;
        let spawned = t0.elapsed();
        let serial = StderrTail::spawn(proc.take_stdout());
        let stderr = StderrTail::spawn(proc.take_stderr());
        // A restored guest only reconnects: if it does not, say why instead of waiting
        // out the whole start deadline.
        let patience = matches!(how, Launch::Restore(_)).then_some(RESTORE_CONNECT_TIMEOUT);
        let stream = await_guest(listener, &mut proc, (&serial, &stderr), patience).await?;
        let connected = t0.elapsed();
        let session = self.session(spec, id, how, stream, &serial).await?;
        Ok(VmSandbox {
            session,
            proc: Some(proc),
            memory_mib: spec.memory_mib,
            images: (files.code_image.clone(), files.opt_image.clone()),
            snapshot_out,
            _files: files.dir,
            serial,
            stderr,
            timeline: (spawned, connected),
            _cpus: cpus,
            _image_link: image_link,
        })
    }
}

/// Starts the jailed VMM on a blocking thread; the uid lease moves with it (see the
/// process backend).
async fn spawn_jailed(
    jcfg: JailConfig,
    cmd: JailCommand,
    cgroups: Arc<CgroupHost>,
    lease: jail::uids::UidLease,
) -> Result<JailedProcess, SandboxError> {
    tokio::task::spawn_blocking(move || {
        jail::spawn(&jcfg, cmd, Some(&cgroups)).map(|mut p| {
            p.hold_uid_lease(lease);
            p
        })
    })
    .await
    .map_err(|e| start_err(e.to_string()))?
    .map_err(|e| start_err(e.to_string()))
}

/// How long a VM resumed from a snapshot gets to reconnect.
const RESTORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits (at most `patience`, if given) for guest-init's vsock connection, or explains
/// why the VMM died first.
async fn await_guest(
    listener: UnixListener,
    proc: &mut JailedProcess,
    (serial, stderr): (&StderrTail, &StderrTail),
    patience: Option<Duration>,
) -> Result<tokio::net::UnixStream, SandboxError> {
    let waited = patience.unwrap_or(Duration::MAX);
    tokio::select! {
        _ = tokio::time::sleep(waited) => Err(start_err(format!(
            "guest-init did not connect within {waited:?}: {} {}",
            stderr.text(),
            serial.text(),
        ))),
        r = listener.accept() => Ok(r.map_err(|e| start_err(format!("accept: {e}")))?.0),
        exit = proc.wait() => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(start_err(format!(
                "vmm exited before guest-init connected ({}): {} {}",
                exit.map_or_else(|e| e.to_string(), |x| x.unreaped().to_string()),
                stderr.text(),
                serial.text(),
            )))
        }
    }
}
