//! Facts about the host: the programs pyro needs, the accelerator it can use, the Debian mirror,
//! its free disk space.

pub mod accel;
pub mod mirror;
pub mod space;
pub mod tools;
