//! The environments pyro can build, each a Debian suite plus a package set.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Error, ErrorKind, Result};

/// Bumped whenever the build recipe changes in a way that makes older builds stale.
pub const RECIPE_VERSION: u32 = 1;

pub const DEFAULT_ENVIRONMENT: &str = "debian:12";

#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub distribution: &'static str,
    pub distribution_version: &'static str,
    /// The Debian suite both the root filesystem and the kernel come from.
    pub suite: &'static str,
    /// Packages installed on top of the `apt` variant (Essential packages plus apt).
    pub packages: &'static [&'static str],
}

pub const CATALOG: &[EnvironmentSpec] = &[
    EnvironmentSpec {
        name: "debian:12",
        description: "Debian 12 with git and ca-certificates (the default)",
        distribution: "debian",
        distribution_version: "12",
        suite: "bookworm",
        packages: &["git", "ca-certificates"],
    },
    EnvironmentSpec {
        name: "debian:12-base",
        description: "Minimal Debian 12: essential packages and apt",
        distribution: "debian",
        distribution_version: "12",
        suite: "bookworm",
        packages: &[],
    },
    EnvironmentSpec {
        name: "debian:12-build",
        description: "Debian 12 for building software: git, build-essential, cmake, python3, pkg-config, curl",
        distribution: "debian",
        distribution_version: "12",
        suite: "bookworm",
        packages: &["git", "build-essential", "cmake", "python3", "pkg-config", "curl", "ca-certificates"],
    },
];

/// Looks an environment up by name; an unknown name is an error listing the known ones.
pub fn lookup(name: &str) -> Result<&'static EnvironmentSpec> {
    CATALOG
        .iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::UnknownEnvironment,
                format!(
                    "unknown environment '{name}'; expected one of: {}",
                    names().join(", ")
                ),
            )
            .with_next(crate::Next::EnvList)
        })
}

pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|spec| spec.name).collect()
}

impl EnvironmentSpec {
    /// A file-system-safe form of the name: `debian:12-base` → `debian-12-base`.
    pub fn slug(&self) -> String {
        self.name.replace(':', "-")
    }

    /// Identifies the recipe: a build made from another recipe is stale.
    pub fn recipe_digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "recipe={RECIPE_VERSION}\nsuite={}\npackages=",
            self.suite
        ));
        hasher.update(self.packages.join(","));
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_environment_lists_known_names() {
        let err = lookup("ubuntu:24.04").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownEnvironment);
        assert!(
            err.message()
                .contains("debian:12, debian:12-base, debian:12-build"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn slugs_are_path_safe() {
        for spec in CATALOG {
            assert!(spec
                .slug()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'));
        }
    }
}
