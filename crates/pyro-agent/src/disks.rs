//! Finding the VM's disks by their ext4 volume labels, whatever order the kernel probed them in.

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

/// Offset of `s_volume_name` in an ext4 superblock (which starts at byte 1024).
const EXT4_LABEL_OFFSET: u64 = 1024 + 120;

pub fn find_by_label(label: &str) -> Option<String> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| format!("/dev/{n}"))
        .find(|dev| read_label(dev).as_deref() == Some(label))
}

/// The virtio disk whose serial (`-device ...,serial=`) is `serial`.
pub fn find_by_serial(serial: &str) -> Option<String> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .find(|n| {
            std::fs::read_to_string(format!("/sys/block/{n}/serial"))
                .is_ok_and(|s| s.trim() == serial)
        })
        .map(|n| format!("/dev/{n}"))
}

pub fn wait_for_label(label: &str, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        if let Some(dev) = find_by_label(label) {
            return Ok(dev);
        }
        if start.elapsed() > limit {
            return Err(format!(
                "no disk labelled {label} appeared within {}s",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_label(dev: &str) -> Option<String> {
    let mut file = std::fs::File::open(dev).ok()?;
    file.seek(SeekFrom::Start(EXT4_LABEL_OFFSET)).ok()?;
    let mut raw = [0u8; 16];
    file.read_exact(&mut raw).ok()?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}
