//! Kernel modules: which the guest needs, and the order to load them in (from each module's
//! `depends=` field, since Debian's package ships no `modules.dep`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// Modules the agent loads at boot: virtio transport, disks, the agent channel, networking, overlayfs.
pub const WANTED: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "overlay",
    "virtio_rng",
];

/// Module name → file, for every `.ko` under `dir`.
fn index(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "ko") {
                if let Some(stem) = path.file_stem() {
                    found.insert(stem.to_string_lossy().replace('-', "_"), path);
                }
            }
        }
    }
    found
}

/// The `depends=` list from a module's `.modinfo` section.
fn depends(ko: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(ko).map_err(|e| Error::io("read", ko, e))?;
    let needle = b"\0depends=";
    let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) else {
        return Ok(Vec::new());
    };
    let rest = &bytes[at + needle.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect())
}

/// Resolves `WANTED` and their dependencies in `modules_dir` (`lib/modules/<release>`), dependencies
/// first. Modules built into the kernel are skipped.
pub fn resolve(modules_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let available = index(&modules_dir.join("kernel"));
    let builtin: BTreeSet<String> = fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            Path::new(l)
                .file_stem()
                .map(|s| s.to_string_lossy().replace('-', "_"))
        })
        .collect();
    let mut ordered = Vec::new();
    let mut seen = BTreeSet::new();
    for name in WANTED {
        visit(name, &available, &builtin, &mut seen, &mut ordered, 0)?;
    }
    Ok(ordered)
}

fn visit(
    name: &str,
    available: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    ordered: &mut Vec<(String, PathBuf)>,
    depth: usize,
) -> Result<()> {
    if seen.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if depth > 32 {
        return Err(Error::new(
            ErrorKind::EnvironmentBuild,
            format!("module dependency loop at {name}"),
        ));
    }
    let Some(path) = available.get(name) else {
        return Err(Error::new(
            ErrorKind::EnvironmentBuild,
            format!("the kernel package has no module `{name}` and it is not built in"),
        ));
    };
    seen.insert(name.to_string());
    for dep in depends(path)? {
        visit(&dep, available, builtin, seen, ordered, depth + 1)?;
    }
    ordered.push((name.to_string(), path.clone()));
    Ok(())
}
