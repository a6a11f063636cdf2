//! pyro's guest networking. QEMU's NIC is backed by one end of a socket pair; the other end is a
//! user-space gateway ([`gateway`]) in the VM's supervisor. The guest talks to it as to a router,
//! and nothing the guest sends leaves the host except through it:
//!
//! - TCP connections are terminated at the gateway and made again from the host, after [`policy`]
//!   has allowed the destination (a refused one gets a reset at once);
//! - DNS queries to the gateway's resolver address are answered through the host's resolvers
//!   ([`dns`]); with an allow list, only for the allowed names;
//! - ping is answered for the gateway's own addresses; any other UDP and ICMP goes nowhere.
//!
//! No host address is ever mapped into the guest: the host's loopback, its own interface addresses
//! and networks, link-local, private and other special ranges are refused whatever the guest asks.

pub mod dns;
pub mod gateway;
pub mod policy;

pub use gateway::{Gateway, GuestAddressing, Inbound, GUEST_ADDRESSING};
pub use policy::{AllowHost, EgressRules, NetworkPolicy};
