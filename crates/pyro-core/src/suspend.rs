//! A suspended VM's saved state, beside its disk in the VM directory: the guest's whole memory and
//! device state (`suspended.state`, the engine's migration stream) and what it takes to resume it
//! (`suspended.json`: the stream's sha256 and length, the RAM layout, the VM's configuration and the
//! identity of the files it ran on).
//!
//! The engine never writes or reads the file itself: it migrates into a pipe the supervisor copies to
//! the file (so the engine's file-size limit, the disk budget, does not apply and the digest is
//! computed on the way), and resumes from a pipe the supervisor feeds while checking the digest. A
//! resume whose digest, length or inputs do not match is refused before the guest runs again.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{VmConfig, VM_SHAPE_VERSION};
use crate::{fsutil, Error, ErrorKind, Result};

pub const STATE_FILE: &str = "suspended.state";
pub const RECORD_FILE: &str = "suspended.json";
const PARTIAL_FILE: &str = "suspended.state.partial";

/// What `suspended.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suspension {
    pub sha256: String,
    pub bytes: u64,
    /// The guest's RAM was the `mem` backend (a VM restored from a template), not the machine's own.
    pub named_ram: bool,
    /// The configuration the guest ran with; a resume must match it.
    pub config: VmConfig,
    /// Size and modification time of the kernel, initramfs and base image it ran on.
    pub inputs: Vec<FileIdentity>,
    pub vm_shape_version: u32,
    pub saved_at_unix_ms: u64,
    /// A fork's state that the VM it is forked from is still writing: the engine follows the file
    /// as it grows, and takes its digest and length from the record once that appears.
    #[serde(skip)]
    pub following: bool,
}

impl Suspension {
    /// What a fork's engine is configured from while the state it resumes is still being saved.
    /// `disk_bytes`, the size of the disk being copied meanwhile, stands in `bytes` until the record
    /// appears: the fork waits for that copy too.
    pub fn following(config: VmConfig, named_ram: bool, disk_bytes: u64) -> Suspension {
        Suspension {
            sha256: String::new(),
            bytes: disk_bytes,
            named_ram,
            inputs: inputs_of(&config),
            config,
            vm_shape_version: VM_SHAPE_VERSION,
            saved_at_unix_ms: crate::vm::now_unix_ms(),
            following: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub path: PathBuf,
    pub len: u64,
    pub mtime_ns: i128,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            path: path.to_path_buf(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

fn inputs_of(config: &VmConfig) -> Vec<FileIdentity> {
    [&config.kernel, &config.initramfs, &config.base_image]
        .into_iter()
        .filter_map(|path| FileIdentity::of(path))
        .collect()
}

/// The most a saved state may take: the guest's RAM, page headers and device state.
pub fn max_bytes(mem_mib: u32) -> u64 {
    let ram = u64::from(mem_mib) << 20;
    ram + ram / 256 + (64 << 20)
}

/// Copies the engine's migration stream from `from` into the VM directory's partial state file,
/// at most `cap` bytes, hashing it on the way. Blocking.
pub fn receive(from: OwnedFd, vm_dir: &Path, cap: u64, durable: bool) -> Result<(String, u64)> {
    let path = vm_dir.join(PARTIAL_FILE);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    let mut from = File::from(from);
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read the engine's state for", &path, e)),
        };
        total += n as u64;
        if total > cap {
            return Err(Error::new(
                ErrorKind::Engine,
                format!(
                    "the VM's saved state outgrew its limit of {} MiB",
                    cap >> 20
                ),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", &path, e))?;
    }
    // A fork's state is read back at once and never kept: only a suspension must outlive a crash.
    if durable {
        out.sync_all().map_err(|e| Error::io("flush", &path, e))?;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Puts the received state in place with its record: from here on the VM directory holds a
/// suspended VM.
pub fn commit(
    vm_dir: &Path,
    config: &VmConfig,
    named_ram: bool,
    sha256: String,
    bytes: u64,
) -> Result<()> {
    let partial = vm_dir.join(PARTIAL_FILE);
    let state = vm_dir.join(STATE_FILE);
    std::fs::rename(&partial, &state).map_err(|e| Error::io("rename", &partial, e))?;
    let record = Suspension {
        sha256,
        bytes,
        named_ram,
        config: config.clone(),
        inputs: inputs_of(config),
        vm_shape_version: VM_SHAPE_VERSION,
        saved_at_unix_ms: crate::vm::now_unix_ms(),
        following: false,
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
    fsutil::write_atomic(&vm_dir.join(RECORD_FILE), &json)
}

/// Streams the saved state to the engine through `to`, returning the digest of what it sent.
/// Blocking; stops at the recorded length.
pub fn feed(state: &Path, to: OwnedFd, bytes: u64) -> Result<String> {
    let mut file = File::open(state).map_err(|e| Error::io("open", state, e))?;
    let mut to = File::from(to);
    let mut hasher = Sha256::new();
    let mut left = bytes;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = file
            .read(&mut buf[..want])
            .map_err(|e| Error::io("read", state, e))?;
        if n == 0 {
            break;
        }
        left -= n as u64;
        pass_on(&mut hasher, &mut to, &buf[..n])?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hands `chunk` of the state to the engine, and to the digest of what it was fed.
fn pass_on(hasher: &mut Sha256, to: &mut File, chunk: &[u8]) -> Result<()> {
    hasher.update(chunk);
    to.write_all(chunk).map_err(|e| {
        Error::new(
            ErrorKind::Engine,
            format!("the engine stopped reading the saved state: {e}"),
        )
    })
}

/// Makes the empty state file a fork's engine follows from the start: the saving VM writes into
/// this same file, and a follower can tell a save that was given up (the file unlinked, see
/// [`discard_partial`]) from one still under way.
pub fn expect(vm_dir: &Path) -> Result<()> {
    let path = vm_dir.join(PARTIAL_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map(drop)
        .map_err(|e| Error::io("create", &path, e))
}

/// Streams a state that another VM's supervisor is still saving into `vm_dir` (see [`expect`]) to
/// the engine through `to`, following the file as it grows, until its record says where it ends.
/// Returns the digest of what was fed and the record. Blocking; gives up at `deadline`, beyond
/// `cap` bytes, or when the save is given up.
pub fn follow(
    vm_dir: &Path,
    to: OwnedFd,
    cap: u64,
    deadline: std::time::Instant,
) -> Result<(String, Suspension)> {
    let path = vm_dir.join(PARTIAL_FILE);
    let mut file = File::open(&path)
        .or_else(|_| File::open(vm_dir.join(STATE_FILE)))
        .map_err(|e| Error::io("open", &path, e))?;
    let mut to = File::from(to);
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut record = None;
    let mut idle_polls = 0u32;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        if n > 0 {
            idle_polls = 0;
            total += n as u64;
            if total > cap {
                return Err(damaged("it is longer than the guest's memory"));
            }
            pass_on(&mut hasher, &mut to, &buf[..n])?;
            continue;
        }
        // At the end of what is written so far. The record is written after the whole state: once
        // it is there, one more pass reads the rest.
        if let Some(done) = record {
            let done: Suspension = done;
            if done.vm_shape_version != VM_SHAPE_VERSION {
                return Err(damaged("it was saved by a pyro with another VM layout"));
            }
            if total != done.bytes {
                return Err(damaged("its length is not the one recorded"));
            }
            return Ok((hex::encode(hasher.finalize()), done));
        }
        record = load(vm_dir);
        if record.is_some() {
            continue;
        }
        if file.metadata().map_or(true, |m| m.nlink() == 0) {
            return Err(Error::new(
                ErrorKind::Engine,
                "the VM it is forked from gave up saving its state",
            ));
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Engine,
                "the VM it is forked from did not finish saving its state in time",
            ));
        }
        // Promptly while the state streams in; more slowly through a long disk copy.
        idle_polls += 1;
        std::thread::sleep(std::time::Duration::from_millis(if idle_polls < 500 {
            1
        } else {
            20
        }));
    }
}

fn damaged(why: &str) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!("the saved state is damaged: {why}"),
    )
}

/// The suspension recorded in `vm_dir`, if there is one (a record without its state is none).
pub fn load(vm_dir: &Path) -> Option<Suspension> {
    if !vm_dir.join(STATE_FILE).is_file() {
        return None;
    }
    std::fs::read(vm_dir.join(RECORD_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// Why `suspension` cannot resume with `config` (the one a boot would use now), if it cannot.
pub fn mismatch(suspension: &Suspension, config: &VmConfig) -> Option<String> {
    let saved = &suspension.config;
    if suspension.vm_shape_version != VM_SHAPE_VERSION {
        return Some("it was saved by a pyro with another VM layout".into());
    }
    let same_shape = saved.vcpu_count == config.vcpu_count
        && saved.mem_mib == config.mem_mib
        && saved.network == config.network
        && saved.accelerator == config.accelerator
        && saved.disk_gib == config.disk_gib
        && saved.data_disk == config.data_disk;
    if !same_shape {
        return Some("the VM's shape changed since it was saved".into());
    }
    if saved.kernel != config.kernel
        || saved.initramfs != config.initramfs
        || saved.base_image != config.base_image
        || suspension.inputs != inputs_of(config)
    {
        return Some(
            "its environment, kernel or guest agent changed since it was saved (rebuilt or upgraded)"
                .into(),
        );
    }
    match std::fs::metadata(state_path(&config.data_disk)) {
        // A fork's state is still being written: its length is checked as it is fed.
        _ if suspension.following => None,
        Ok(meta) if meta.len() == suspension.bytes => None,
        Ok(meta) => Some(format!(
            "its state file has {} bytes, {} were saved",
            meta.len(),
            suspension.bytes
        )),
        Err(err) => Some(format!("its state file cannot be read: {err}")),
    }
}

/// The state file beside `data_disk`.
pub fn state_path(data_disk: &Path) -> PathBuf {
    data_disk
        .parent()
        .map(|dir| dir.join(STATE_FILE))
        .unwrap_or_else(|| PathBuf::from(STATE_FILE))
}

/// Marks the saved state in the current directory (the supervisor's, its VM's) used: its record
/// goes, durably, so it is never loaded again once the guest runs on and writes to its disk.
pub fn spend() -> Result<()> {
    let record = Path::new(RECORD_FILE);
    std::fs::remove_file(record).map_err(|e| Error::io("remove", record, e))?;
    if let Ok(dir) = File::open(".") {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Removes a saved state (after a resume, or when it can no longer be used).
pub fn discard(vm_dir: &Path) -> Result<()> {
    for name in [RECORD_FILE, STATE_FILE, PARTIAL_FILE] {
        let path = vm_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    Ok(())
}

/// Removes a partial state left by a save that did not finish.
pub fn discard_partial(vm_dir: &Path) {
    let _ = std::fs::remove_file(vm_dir.join(PARTIAL_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Memory;
    use crate::host::accel::Accelerator;

    fn setup() -> (tempfile::TempDir, VmConfig) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["vmlinuz", "initrd", "base.img"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let config = VmConfig {
            vcpu_count: 1,
            mem_mib: 256,
            network: false,
            accelerator: Accelerator::Tcg,
            tsc_khz: None,
            kernel: dir.path().join("vmlinuz"),
            initramfs: dir.path().join("initrd"),
            base_image: dir.path().join("base.img"),
            data_disk: dir.path().join("disk.qcow2"),
            disk_gib: 1,
            memory: Memory::Anonymous,
        };
        (dir, config)
    }

    /// Saves `payload` as the state of `config`'s VM, as a supervisor would.
    fn save(dir: &Path, config: &VmConfig, payload: &[u8]) -> Suspension {
        let (read, write) = crate::engine::launch::pipe().unwrap();
        let mut writer = File::from(write);
        writer.write_all(payload).unwrap();
        drop(writer);
        let (sha256, bytes) = receive(read, dir, 1 << 20, true).unwrap();
        commit(dir, config, false, sha256, bytes).unwrap();
        load(dir).unwrap()
    }

    #[test]
    fn a_saved_state_fits_only_the_vm_and_inputs_it_was_saved_with() {
        let (dir, config) = setup();
        let saved = save(dir.path(), &config, b"state");
        assert_eq!(saved.bytes, 5);
        assert_eq!(mismatch(&saved, &config), None);
        let bigger = VmConfig {
            mem_mib: 512,
            ..config.clone()
        };
        assert!(mismatch(&saved, &bigger).unwrap().contains("shape"));
        std::fs::write(&config.base_image, "rebuilt").unwrap();
        assert!(mismatch(&saved, &config).unwrap().contains("environment"));
        std::fs::write(&config.base_image, "base.img").unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"cut").unwrap();
        let again = FileIdentity::of(&config.base_image).unwrap();
        let saved = Suspension {
            inputs: vec![
                FileIdentity::of(&config.kernel).unwrap(),
                FileIdentity::of(&config.initramfs).unwrap(),
                again,
            ],
            ..saved
        };
        assert!(mismatch(&saved, &config).unwrap().contains("3 bytes"));
        discard(dir.path()).unwrap();
        assert!(load(dir.path()).is_none());
    }

    #[test]
    fn feeding_a_state_gives_the_digest_of_what_was_saved() {
        let (dir, config) = setup();
        let saved = save(dir.path(), &config, &[7u8; 3000]);
        let (read, write) = crate::engine::launch::pipe().unwrap();
        let state = dir.path().join(STATE_FILE);
        let feeder = std::thread::spawn(move || feed(&state, write, 3000));
        let mut received = Vec::new();
        File::from(read).read_to_end(&mut received).unwrap();
        assert_eq!(feeder.join().unwrap().unwrap(), saved.sha256);
        assert_eq!(received.len(), 3000);
    }

    #[test]
    fn a_stream_over_its_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (read, write) = crate::engine::launch::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = File::from(write).write_all(&[1u8; 5000]);
        });
        assert!(receive(read, dir.path(), 4096, true).is_err());
        writer.join().unwrap();
    }

    #[test]
    fn a_followed_state_is_fed_as_it_is_written_until_its_record_appears() {
        let (dir, config) = setup();
        expect(dir.path()).unwrap();
        let (read, write) = crate::engine::launch::pipe().unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let path = dir.path().to_path_buf();
        let follower = std::thread::spawn(move || follow(&path, write, 1 << 20, until));
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            File::from(read)
                .read_to_end(&mut received)
                .map(|_| received)
        });
        // The saver writes into the same file, in pieces, then commits.
        let (source, sink) = crate::engine::launch::pipe().unwrap();
        let saver = {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || receive(source, &path, 1 << 20, false))
        };
        let mut sink = File::from(sink);
        for _ in 0..3 {
            sink.write_all(&[9u8; 1000]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(sink);
        let (sha256, bytes) = saver.join().unwrap().unwrap();
        commit(dir.path(), &config, false, sha256.clone(), bytes).unwrap();
        let (fed, record) = follower.join().unwrap().unwrap();
        assert_eq!(fed, sha256);
        assert_eq!(record.bytes, 3000);
        assert_eq!(reader.join().unwrap().unwrap().len(), 3000);
    }

    #[test]
    fn a_follower_gives_up_when_the_save_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        expect(dir.path()).unwrap();
        let (read, write) = crate::engine::launch::pipe().unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let path = dir.path().to_path_buf();
        let follower = std::thread::spawn(move || follow(&path, write, 1 << 20, until));
        std::thread::sleep(std::time::Duration::from_millis(20));
        discard_partial(dir.path());
        let err = follower.join().unwrap().unwrap_err();
        assert!(err.message().contains("gave up"), "{err}");
        drop(read);
    }

    #[test]
    fn the_cap_leaves_room_for_page_headers_and_devices() {
        assert!(max_bytes(1024) > 1024 << 20);
        assert!(max_bytes(1024) < 1100 << 20);
    }
}
