//! Static IPv4 set-up through ioctls: the guest has no DHCP client and may have no `ip` binary.

use std::io;
use std::net::Ipv4Addr;

use pyro_proto::NetworkConfig;

use crate::sys;

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const SIOCADDRT: libc::c_ulong = 0x890b;

/// `struct ifreq`: a 16-byte name and a 24-byte union (address or flags).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

struct Socket(libc::c_int);

impl Socket {
    fn new() -> io::Result<Socket> {
        // SAFETY: socket takes no pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: closing the fd we own.
        unsafe { libc::close(self.0) };
    }
}

fn ifreq(name: &str) -> IfReq {
    let mut req = IfReq {
        name: [0; 16],
        data: [0; 24],
    };
    let len = name.len().min(15);
    req.name[..len].copy_from_slice(&name.as_bytes()[..len]);
    req
}

fn sockaddr_in(addr: Ipv4Addr) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    raw[4..8].copy_from_slice(&addr.octets());
    raw
}

fn set_up(sock: &Socket, name: &str) -> io::Result<()> {
    let mut req = ifreq(name);
    sys::ioctl_ptr(
        sock.0,
        SIOCGIFFLAGS,
        (&mut req as *mut IfReq).cast(),
        "SIOCGIFFLAGS",
    )?;
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]]) | (libc::IFF_UP as i16);
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    sys::ioctl_ptr(
        sock.0,
        SIOCSIFFLAGS,
        (&mut req as *mut IfReq).cast(),
        "SIOCSIFFLAGS",
    )
}

pub fn loopback_up() -> io::Result<()> {
    set_up(&Socket::new()?, "lo")
}

pub fn configure(config: &NetworkConfig) -> io::Result<()> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid {what}"));
    let address: Ipv4Addr = config.address.parse().map_err(|_| invalid("address"))?;
    let gateway: Ipv4Addr = config.gateway.parse().map_err(|_| invalid("gateway"))?;
    if config.prefix_len > 32 {
        return Err(invalid("prefix length"));
    }
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - config.prefix_len as u32)
            .unwrap_or(0),
    );
    let sock = Socket::new()?;
    let device = "eth0";
    let mut req = ifreq(device);
    req.data[..16].copy_from_slice(&sockaddr_in(address));
    sys::ioctl_ptr(
        sock.0,
        SIOCSIFADDR,
        (&mut req as *mut IfReq).cast(),
        "SIOCSIFADDR",
    )?;
    let mut req = ifreq(device);
    req.data[..16].copy_from_slice(&sockaddr_in(mask));
    sys::ioctl_ptr(
        sock.0,
        SIOCSIFNETMASK,
        (&mut req as *mut IfReq).cast(),
        "SIOCSIFNETMASK",
    )?;
    set_up(&sock, device)?;
    // SAFETY: rtentry is plain old data; the sockaddr fields are filled with valid sockaddr_in bytes.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    let write_addr = |field: &mut libc::sockaddr, addr: Ipv4Addr| {
        let raw = sockaddr_in(addr);
        // SAFETY: sockaddr is 16 bytes, the size of raw.
        unsafe {
            std::ptr::copy_nonoverlapping(raw.as_ptr(), (field as *mut libc::sockaddr).cast(), 16);
        };
    };
    write_addr(&mut route.rt_dst, Ipv4Addr::UNSPECIFIED);
    write_addr(&mut route.rt_genmask, Ipv4Addr::UNSPECIFIED);
    write_addr(&mut route.rt_gateway, gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    sys::ioctl_ptr(
        sock.0,
        SIOCADDRT,
        (&mut route as *mut libc::rtentry).cast(),
        "SIOCADDRT",
    )
}
