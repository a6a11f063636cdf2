//! Every limit and default a caller can run into, in one place. The core checks them; the CLI's
//! argument parser and MCP's schemas read the same constants, so no surface is looser or stricter
//! than another.

use std::fmt::Display;
use std::ops::RangeInclusive;

use crate::{Error, Result};

/// vCPUs of a VM.
pub const VCPU_COUNT: RangeInclusive<u8> = 1..=8;
pub const DEFAULT_VCPU_COUNT: u8 = 1;
/// Guest memory, in MiB.
pub const MEM_MIB: RangeInclusive<u32> = 256..=32768;
pub const DEFAULT_MEM_MIB: u32 = 1024;
/// The size of a VM's own disk, in GiB.
pub const DISK_GIB: RangeInclusive<u32> = 1..=1024;
pub const DEFAULT_DISK_GIB: u32 = 8;
/// VMs a pool keeps ready for `run` (`prepare --pool`); each costs its memory while it waits.
pub const POOL_SIZE: RangeInclusive<u8> = 0..=8;
/// Named snapshots a workspace may keep (the baseline not counted).
pub const MAX_SNAPSHOTS: usize = 32;
/// How long one command may run, in seconds.
pub const TIMEOUT_SECONDS: RangeInclusive<u64> = 1..=86_400;
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// Idle time before a workspace's VM is stopped, in seconds.
pub const TTL_SECONDS: RangeInclusive<u64> = 10..=604_800;
pub const DEFAULT_TTL_SECONDS: u64 = 3600;
/// How long a service may take to become ready, in seconds.
pub const READY_TIMEOUT_SECONDS: RangeInclusive<u64> = 1..=3600;
pub const DEFAULT_READY_TIMEOUT_SECONDS: u64 = 30;
/// How often a service's readiness check runs, in milliseconds.
pub const READY_INTERVAL_MS: RangeInclusive<u64> = 10..=60_000;
pub const DEFAULT_READY_INTERVAL_MS: u64 = 500;
/// A shell's terminal size.
pub const SHELL_COLS: RangeInclusive<u16> = 1..=1000;
pub const DEFAULT_SHELL_COLS: u16 = 120;
pub const SHELL_ROWS: RangeInclusive<u16> = 1..=1000;
pub const DEFAULT_SHELL_ROWS: u16 = 30;
/// Bytes one shell read returns at most.
pub const SHELL_READ_BYTES: RangeInclusive<u64> = 1..=(1 << 20);
pub const DEFAULT_SHELL_READ_BYTES: u64 = 64 << 10;
/// How long a shell read may wait for output to go quiet, in milliseconds.
pub const SHELL_IDLE_MS: RangeInclusive<u64> = 1..=10_000;

/// `value` of the argument `name` if it lies in `range`, else an error that names both.
pub fn check<T: PartialOrd + Display + Copy>(
    name: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<T> {
    if range.contains(&value) {
        return Ok(value);
    }
    Err(Error::invalid(format!(
        "{name} must be between {} and {}, got {value}",
        range.start(),
        range.end()
    )))
}

/// A range as clap's integer parsers take it (every limit here fits an `i64`).
pub fn as_i64<T: Copy + TryInto<i64>>(range: &RangeInclusive<T>) -> RangeInclusive<i64> {
    let wide = |v: T| v.try_into().unwrap_or(i64::MAX);
    wide(*range.start())..=wide(*range.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_argument_and_the_range() {
        assert_eq!(check("timeout_seconds", 30, &TIMEOUT_SECONDS).unwrap(), 30);
        let err = check("timeout_seconds", 100_000, &TIMEOUT_SECONDS).unwrap_err();
        assert_eq!(
            err.message(),
            "timeout_seconds must be between 1 and 86400, got 100000"
        );
        assert!(check("vcpu_count", 0, &VCPU_COUNT).is_err());
        assert!(TTL_SECONDS.contains(&DEFAULT_TTL_SECONDS));
        assert!(TIMEOUT_SECONDS.contains(&DEFAULT_TIMEOUT_SECONDS));
    }
}
