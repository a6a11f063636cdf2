//! Which accelerator a VM runs under, and why.
//!
//! KVM runs stock kernels only when the CPU's own virtualization is there (`kvm_intel`/`kvm_amd`, or
//! `vmx`/`svm` flags). A host that is itself a VM may offer `/dev/kvm` through PVM (`kvm_pvm`), which
//! boots only PVM-built guest kernels: there pyro uses TCG and says why.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmState {
    Usable,
    PvmOnly,
    NoAccess,
    Absent,
}

#[derive(Debug, Clone, Serialize)]
pub struct KvmReport {
    pub state: KvmState,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcceleratorChoice {
    pub accelerator: Accelerator,
    pub reason: String,
    pub kvm: KvmReport,
}

pub fn kvm_report() -> KvmReport {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return KvmReport {
            state: KvmState::Absent,
            reason: "/dev/kvm does not exist".into(),
        };
    }
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return KvmReport {
            state: KvmState::NoAccess,
            reason: format!(
                "/dev/kvm cannot be opened read-write ({err}); add your user to the `kvm` group"
            ),
        };
    }
    let hardware_module = ["kvm_intel", "kvm_amd"]
        .iter()
        .find(|m| Path::new("/sys/module").join(m).exists());
    if let Some(module) = hardware_module {
        return KvmReport {
            state: KvmState::Usable,
            reason: format!("/dev/kvm is usable ({module} is loaded)"),
        };
    }
    let cpu_flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_hw_flag = cpu_flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if Path::new("/sys/module/kvm_pvm").exists() && !has_hw_flag {
        return KvmReport {
            state: KvmState::PvmOnly,
            reason: "/dev/kvm is PVM (kvm_pvm) without vmx/svm: it boots only PVM guest kernels"
                .into(),
        };
    }
    if has_hw_flag {
        return KvmReport {
            state: KvmState::Usable,
            reason: "/dev/kvm is usable (the CPU has vmx/svm)".into(),
        };
    }
    KvmReport {
        state: KvmState::Absent,
        reason: "/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded".into(),
    }
}

/// Picks the accelerator: `PYRO_ACCEL=kvm|tcg` forces one, else KVM when usable, else TCG.
pub fn choose() -> AcceleratorChoice {
    let kvm = kvm_report();
    let forced = std::env::var("PYRO_ACCEL").ok();
    let (accelerator, reason) = match forced.as_deref() {
        Some("kvm") => (Accelerator::Kvm, "forced by PYRO_ACCEL=kvm".to_string()),
        Some("tcg") => (Accelerator::Tcg, "forced by PYRO_ACCEL=tcg".to_string()),
        _ if kvm.state == KvmState::Usable => (Accelerator::Kvm, kvm.reason.clone()),
        _ => (
            Accelerator::Tcg,
            format!("software emulation: {}", kvm.reason),
        ),
    };
    AcceleratorChoice {
        accelerator,
        reason,
        kvm,
    }
}

/// The host TSC frequency in kHz. Under TCG the guest TSC ticks at the host's rate, and a guest that
/// has to calibrate it on a busy host may hang at boot, so pyro passes it on the kernel command line.
pub fn tsc_khz() -> Option<u64> {
    kernel_log_tsc_khz().or_else(cpuinfo_khz)
}

fn kernel_log_tsc_khz() -> Option<u64> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut record = vec![0u8; 8192];
    let mut found = None;
    // Each read returns one record; stop at EAGAIN (end of the buffer) or after enough records.
    for _ in 0..4000 {
        let n = match kmsg.read(&mut record) {
            Ok(n) => n,
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        };
        let line = String::from_utf8_lossy(&record[..n]);
        for marker in [
            "tsc: Refined TSC clocksource calibration: ",
            "tsc: Detected ",
        ] {
            if let Some(rest) = line.split(marker).nth(1) {
                if let Some(mhz) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    found = Some((mhz * 1000.0).round() as u64);
                }
            }
        }
        if line.contains("Refined TSC") {
            break;
        }
    }
    found
}

fn cpuinfo_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}
