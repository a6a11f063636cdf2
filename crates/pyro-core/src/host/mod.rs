//! Facts about the host: the programs pyro needs, the accelerator it can use, the Debian mirror.

pub mod accel;
pub mod mirror;
pub mod tools;
