//! Built environments in the cache: the guest kernel, its modules and the read-only base image.
//!
//! Layout: `<cache>/environments/<slug>/{manifest.json, vmlinuz, rootfs.ext4, modules/*.ko}`. A build
//! happens in a `.staging-*` directory and becomes visible by one rename, after its manifest is written:
//! an interrupted build never looks installed.

mod build;
mod kmod;
mod store;

pub use build::pull;
pub use store::{
    inspect, installed_by_name, list, prune, EnvironmentInfo, Installed, Manifest, PruneReport,
};
