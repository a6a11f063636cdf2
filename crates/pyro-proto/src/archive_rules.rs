//! What an archive member may be, checked the same way on both ends of the protocol.

use std::io;
use std::path::{Component, Path};

fn refuse(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A member name as relative `/`-joined components, or an error for anything unsafe.
pub fn member_path(path: &Path) -> io::Result<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(format!(
                    "absolute archive member paths are not allowed: {}",
                    path.display()
                )))
            }
            Component::ParentDir => {
                return Err(refuse(format!(
                    "unsafe archive member path: {}",
                    path.display()
                )))
            }
        }
    }
    Ok(parts.join("/"))
}

/// Whether a symlink at `member` pointing to `target` stays inside the archive root.
pub fn link_stays_inside(member: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = member.split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_are_checked() {
        assert_eq!(member_path(Path::new("./a/b")).unwrap(), "a/b");
        assert!(member_path(Path::new("/etc/passwd")).is_err());
        assert!(member_path(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(link_stays_inside("a/link", "b"));
        assert!(link_stays_inside("a/link", "../b"));
        assert!(!link_stays_inside("a/link", "../../b"));
        assert!(!link_stays_inside("link", "/etc/passwd"));
        assert!(!link_stays_inside("link", ""));
    }
}
