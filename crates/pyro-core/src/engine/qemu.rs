//! The QEMU `microvm` backend.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{
    Backend, Memory, VmConfig, AGENT_CHANNEL_FD, BASE_FD, DATA_FD, INITRD_FD, KERNEL_FD, QMP_FD,
    RAM_FD,
};
use crate::host::accel::Accelerator;
use crate::host::tools;
use crate::{Error, ErrorKind, Result};

pub struct Qemu {
    binary: PathBuf,
}

impl Qemu {
    pub fn locate() -> Result<Qemu> {
        Ok(Qemu {
            binary: tools::QEMU.find()?,
        })
    }
}

impl Backend for Qemu {
    fn name(&self) -> &'static str {
        "qemu-microvm"
    }

    fn command(&self, config: &VmConfig) -> Result<Command> {
        let mut cmdline = String::from("console=ttyS0 quiet panic=-1 reboot=t");
        if let Some(khz) = config.tsc_khz {
            // Without it a TCG guest may hang calibrating the TSC on a busy host.
            cmdline.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
        }
        let accel = match config.accelerator {
            Accelerator::Kvm => "kvm".to_string(),
            // The translation cache is QEMU's own memory on top of the guest's: QEMU's default
            // (1 GiB) lets a busy guest cost the host far more than its RAM.
            Accelerator::Tcg => format!("tcg,tb-size={}", tcg_cache_mib()),
        };
        // Every file and socket arrives as a descriptor (see `launch`): QEMU opens nothing by a
        // path of its own, so it needs no access to pyro's directories.
        let fd = |n: i32| format!("/proc/self/fd/{n}");
        let mut machine = String::from("microvm,acpi=on");
        let memory_backend = match &config.memory {
            Memory::Anonymous => None,
            Memory::TemplateFile { .. } => Some(format!(
                "memory-backend-file,id=mem,size={}M,mem-path={},share=on",
                config.mem_mib,
                fd(RAM_FD)
            )),
            Memory::Restore { .. } => Some(format!(
                "memory-backend-file,id=mem,size={}M,mem-path={},share=off",
                config.mem_mib,
                fd(RAM_FD)
            )),
            Memory::Resume { named_ram, .. } => {
                named_ram.then(|| format!("memory-backend-ram,id=mem,size={}M", config.mem_mib))
            }
        };
        if memory_backend.is_some() {
            machine.push_str(",memory-backend=mem");
        }
        let mut command = Command::new(&self.binary);
        // The sockets QEMU creates (QMP, the agent channel) are the user's alone: QMP is as good as
        // a shell as the user.
        // SAFETY: umask is async-signal-safe and takes no pointers.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::umask(0o177);
                Ok(())
            });
        }
        command
            .args(["-M", &machine])
            .args(["-accel", &accel])
            .args(["-smp", &config.vcpu_count.to_string()])
            .args(["-m", &format!("{}M", config.mem_mib)])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            // QEMU needs none of these: no new processes (restores read a descriptor, the NIC is a
            // socket), no privilege changes, no scheduling games, no obsolete system calls.
            .args([
                "-sandbox",
                "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            ])
            .args(["-serial", "stdio"])
            .args(["-kernel", &fd(KERNEL_FD)])
            .args(["-initrd", &fd(INITRD_FD)])
            .args(["-append", &cmdline])
            .args([
                "-drive",
                &format!(
                    "id=base,file={},format=raw,if=none,readonly=on",
                    fd(BASE_FD)
                ),
                "-device",
                "virtio-blk-device,drive=base",
            ])
            // The VM's disk, under a `raw` node the device is attached to: the disk node beneath can
            // be replaced while the VM runs (a pooled VM takes over a workspace's disk).
            .args([
                "-blockdev",
                &serde_json::json!({
                    "driver": "raw",
                    "node-name": DATA_NODE,
                    "discard": "unmap",
                    "file": {
                        "driver": crate::disk::FORMAT,
                        "node-name": "data-disk",
                        "discard": "unmap",
                        "file": {"driver": "file", "filename": fd(DATA_FD), "discard": "unmap"},
                    },
                })
                .to_string(),
                "-device",
                &format!("virtio-blk-device,drive={DATA_NODE}"),
            ])
            // The snapshot drive: an empty read-only device the supervisor attaches a disk snapshot
            // to while the agent reads it (microvm has no hotplug, so it is there from boot).
            .args([
                "-blockdev",
                &format!(
                    "driver=null-co,node-name=view-empty,size={},read-zeroes=on",
                    u64::from(config.disk_gib.max(1)) << 30
                ),
                "-blockdev",
                "driver=raw,node-name=view,file=view-empty,read-only=on",
                "-device",
                &format!(
                    "virtio-blk-device,drive=view,serial={}",
                    pyro_proto::VIEW_DISK_SERIAL
                ),
            ])
            .args(["-device", "virtio-serial-device"])
            .args([
                "-chardev",
                &format!("socket,id=agent,fd={AGENT_CHANNEL_FD},server=on,wait=off"),
            ])
            .args([
                "-device",
                &format!(
                    "virtserialport,chardev=agent,name={}",
                    pyro_proto::AGENT_PORT_NAME
                ),
            ])
            .args([
                "-chardev",
                &format!("socket,id=qmp,fd={QMP_FD},server=on,wait=off"),
                "-mon",
                "chardev=qmp,mode=control",
            ]);
        if config.network {
            // The NIC's frames go to pyro's gateway over an inherited socket: QEMU itself opens
            // no connection and maps no host address for the guest.
            command.args([
                "-netdev",
                &format!("socket,id=net0,fd={}", super::NIC_FD),
                "-device",
                "virtio-net-device,netdev=net0",
            ]);
        }
        if let Some(backend) = memory_backend {
            command.args(["-object", &backend]);
        }
        if matches!(
            config.memory,
            Memory::Restore { .. } | Memory::Resume { .. }
        ) {
            // The state arrives over QMP (`migrate-incoming`) before the VM runs.
            command.args(["-incoming", "defer"]);
        }
        Ok(command)
    }
}

/// `QEMU emulator version 7.2.19 (...)` → `7.2.19`.
/// MiB of TCG translation cache per VM: [`TCG_CACHE_ENV`] when set (for measurements), else
/// [`TCG_CACHE_MIB`].
pub fn tcg_cache_mib() -> u32 {
    std::env::var(TCG_CACHE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|mib| (8..=4096).contains(mib))
        .unwrap_or(TCG_CACHE_MIB)
}

/// The block node the VM's disk device is attached to (QMP commands on the disk name it).
pub const DATA_NODE: &str = "data";

pub const TCG_CACHE_MIB: u32 = 128;
pub const TCG_CACHE_ENV: &str = "PYRO_TCG_CACHE_MIB";

pub fn qemu_version(binary: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| {
            Error::new(
                ErrorKind::Engine,
                format!("cannot run {}: {e}", binary.display()),
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .and_then(|l| l.split("version ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Engine,
                format!("unrecognised `{} --version` output", binary.display()),
            )
        })
}
