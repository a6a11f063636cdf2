//! The guest's gateway: a user-space IPv4 stack (smoltcp) on the host end of the VM's NIC.
//!
//! Frames arrive from QEMU over a stream socket, each behind a 4-byte big-endian length (QEMU's
//! `-netdev socket` framing). Each one is looked at before the stack sees it:
//! - ARP is answered for every address on the guest's network but its own, so a connection to a
//!   refused neighbour fails fast (with a reset) instead of waiting for ARP;
//! - a TCP SYN is checked against the [`Policy`]; an allowed one gets a socket listening on exactly
//!   that destination, whose SYN-ACK waits until the host's own connection is made (so a destination
//!   that refuses is refused in the guest too); a refused one gets a reset;
//! - UDP goes only to the resolver address (port 53); other UDP is refused with ICMP "port
//!   unreachable"; ICMP goes only to the gateway's own addresses; anything else (IPv6, other
//!   protocols, spoofed sources) is dropped;
//! - DNS, over UDP or TCP, is answered by the gateway itself: it checks each query against the
//!   policy and asks the host's resolvers from the host.
//!
//! One task owns the stack; each TCP connection has a host-side task that relays bytes through
//! bounded channels, so nothing the guest does makes the host buffer without bound.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as StackInstant;
use smoltcp::wire::{
    ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress,
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpListenEndpoint,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::dns;
use crate::policy::{EgressRules, Policy};

/// The guest's addresses: it configures them itself (no DHCP in the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddressing {
    pub guest: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

/// The same layout as QEMU's user networking, so guest habits carry over; only the meaning of the
/// gateway changed: it is pyro's gateway, never the host.
pub const GUEST_ADDRESSING: GuestAddressing = GuestAddressing {
    guest: Ipv4Addr::new(10, 0, 2, 15),
    prefix_len: 24,
    gateway: Ipv4Addr::new(10, 0, 2, 2),
    dns: Ipv4Addr::new(10, 0, 2, 3),
};

const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
/// The largest frame QEMU sends on a socket backend (and the most we accept).
const MAX_FRAME: usize = 65536 + 14;
const MTU: usize = 1500;
/// Per-connection stack buffers: large enough for window scaling to keep a link busy.
const SOCKET_BUFFER: usize = 256 << 10;
/// Concurrent TCP connections per VM; more are refused.
const MAX_CONNECTIONS: usize = 128;
/// Concurrent DNS queries in flight per VM; more are dropped (the guest retries).
const MAX_DNS_IN_FLIGHT: usize = 32;
/// How long the host's connection to a destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A socket whose handshake never completes is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued towards the guest (and from it) before the stack waits.
const FRAME_QUEUE: usize = 512;
const RELAY_CHUNK: usize = 64 << 10;

/// A connection a host client made to a published port, to carry to the guest's `guest_port`.
pub struct Inbound {
    pub guest_port: u16,
    pub stream: TcpStream,
}

/// One VM's gateway.
pub struct Gateway {
    policy: Arc<Policy>,
    addressing: GuestAddressing,
    upstreams: Vec<SocketAddr>,
}

impl Gateway {
    pub fn new(rules: EgressRules) -> Gateway {
        Gateway {
            policy: Arc::new(Policy::new(rules)),
            addressing: GUEST_ADDRESSING,
            upstreams: dns::upstreams(),
        }
    }

    /// Serves the guest until its NIC socket closes (QEMU exited). Connections to published ports
    /// arrive on `inbound` (see [`Inbound`]).
    pub async fn run(
        self,
        nic: tokio::net::UnixStream,
        mut inbound: mpsc::Receiver<Inbound>,
    ) -> io::Result<()> {
        let (read, write) = nic.into_split();
        let (frames_in, mut from_guest) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
        let (to_guest, frames_out) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
        tokio::spawn(read_frames(read, frames_in));
        tokio::spawn(write_frames(write, frames_out));
        for name in self.policy.allowed_names() {
            let policy = self.policy.clone();
            tokio::spawn(async move {
                if let Ok(addrs) = tokio::net::lookup_host((name.as_str(), 0)).await {
                    let ips: Vec<Ipv4Addr> = addrs
                        .filter_map(|a| match a {
                            SocketAddr::V4(v4) => Some(*v4.ip()),
                            SocketAddr::V6(_) => None,
                        })
                        .collect();
                    policy.learn(&name, &ips);
                }
            });
        }
        let mut stack = Stack::new(self);
        loop {
            stack.round();
            while let Some(frame) = stack.device.tx.pop_front() {
                match to_guest.try_send(frame) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(frame)) => {
                        stack.device.tx.push_front(frame);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                }
            }
            let delay = stack.delay();
            let blocked = !stack.device.tx.is_empty();
            tokio::select! {
                frame = from_guest.recv() => match frame {
                    Some(frame) => stack.ingest(frame),
                    None => return Ok(()),
                },
                _ = stack.wake.notified() => {}
                Some(connection) = inbound.recv() => stack.on_inbound(connection),
                answer = stack.dns_answers.recv() => {
                    if let Some(answer) = answer {
                        stack.answer_dns(answer);
                    }
                }
                permit = to_guest.reserve(), if blocked => match permit {
                    Ok(permit) => {
                        if let Some(frame) = stack.device.tx.pop_front() {
                            permit.send(frame);
                        }
                    }
                    Err(_) => return Ok(()),
                },
                _ = tokio::time::sleep(delay) => {}
            }
            // Take every frame already waiting before the next round.
            while let Ok(frame) = from_guest.try_recv() {
                stack.ingest(frame);
            }
        }
    }
}

async fn read_frames(mut read: tokio::net::unix::OwnedReadHalf, frames: mpsc::Sender<Vec<u8>>) {
    let mut len = [0u8; 4];
    loop {
        if read.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            return;
        }
        let mut frame = vec![0u8; n];
        if read.read_exact(&mut frame).await.is_err() || frames.send(frame).await.is_err() {
            return;
        }
    }
}

async fn write_frames(
    write: tokio::net::unix::OwnedWriteHalf,
    mut frames: mpsc::Receiver<Vec<u8>>,
) {
    let mut out = tokio::io::BufWriter::with_capacity(256 << 10, write);
    while let Some(frame) = frames.recv().await {
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            let header = (frame.len() as u32).to_be_bytes();
            if out.write_all(&header).await.is_err() || out.write_all(&frame).await.is_err() {
                return;
            }
            next = frames.try_recv().ok();
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

/// The device smoltcp reads and writes: two frame queues.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let result = f(&mut frame);
        self.0.push_back(frame);
        result
    }
}

impl Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: StackInstant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: StackInstant) -> Option<TxToken<'_>> {
        // A full queue is back-pressure: the stack retries on a later round.
        (self.tx.len() < FRAME_QUEUE).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU + 14;
        caps
    }
}

/// What a connection's host task tells the stack.
enum HostEvent {
    Connected,
    Failed,
    Data(Vec<u8>),
    /// The destination finished sending (a half-close, passed on to the guest as a FIN).
    Finished,
}

struct Connection {
    key: (SocketAddrV4, SocketAddrV4),
    /// Bytes from the guest to the host task; `None` once the guest has finished sending.
    to_host: Option<mpsc::Sender<Vec<u8>>>,
    from_host: mpsc::Receiver<HostEvent>,
    pending: Option<(Vec<u8>, usize)>,
    connected: bool,
    host_finished: bool,
    fin_sent: bool,
    created: std::time::Instant,
}

struct DnsAnswer {
    reply: Vec<u8>,
    to: smoltcp::wire::IpEndpoint,
}

struct Stack {
    gateway: Gateway,
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    dns_socket: SocketHandle,
    connections: HashMap<SocketHandle, Connection>,
    by_key: HashMap<(SocketAddrV4, SocketAddrV4), SocketHandle>,
    wake: Arc<Notify>,
    dns_sender: mpsc::Sender<DnsAnswer>,
    dns_answers: mpsc::Receiver<DnsAnswer>,
    epoch: std::time::Instant,
    /// The gateway's side of the last connection made to a published port.
    next_local_port: u16,
}

impl Stack {
    fn new(gateway: Gateway) -> Stack {
        let mut device = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        };
        let epoch = std::time::Instant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        config.random_seed = random_seed();
        let mut iface = Interface::new(config, &mut device, StackInstant::from_micros(0));
        let a = gateway.addressing;
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a.gateway), a.prefix_len));
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a.dns), a.prefix_len));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(a.gateway);
        iface.set_any_ip(true);
        let mut sockets = SocketSet::new(Vec::new());
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; 64],
                vec![0u8; 64 * dns::MAX_MESSAGE],
            )
        };
        let mut dns_socket = udp::Socket::new(buffer(), buffer());
        let _ = dns_socket.bind(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(a.dns)),
            port: 53,
        });
        let dns_socket = sockets.add(dns_socket);
        let (dns_sender, dns_answers) = mpsc::channel(MAX_DNS_IN_FLIGHT);
        Stack {
            gateway,
            iface,
            device,
            sockets,
            dns_socket,
            connections: HashMap::new(),
            by_key: HashMap::new(),
            wake: Arc::new(Notify::new()),
            dns_sender,
            dns_answers,
            epoch,
            next_local_port: 49152,
        }
    }

    fn now(&self) -> StackInstant {
        StackInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn delay(&mut self) -> Duration {
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map(Duration::from)
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    /// One pass: frames in, connections pumped both ways, frames out, finished connections removed.
    fn round(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.serve_dns_queries();
        let handles: Vec<SocketHandle> = self.connections.keys().copied().collect();
        for handle in handles {
            self.pump(handle);
        }
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.reap();
    }

    /// Looks at a frame from the guest; queues it for the stack only if it may go there.
    fn ingest(&mut self, frame: Vec<u8>) {
        let a = self.gateway.addressing;
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let Ok(arp) = ArpPacket::new_checked(eth.payload()) else {
                    return;
                };
                let target = arp.target_protocol_addr();
                let sender = arp.source_protocol_addr();
                // Not the guest's own address (duplicate-address probes), nor gratuitous ARP.
                if target == a.guest.octets() || target == sender {
                    return;
                }
            }
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                if ip.src_addr() != a.guest {
                    return;
                }
                let dst = ip.dst_addr();
                match ip.next_header() {
                    IpProtocol::Tcp => {
                        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                            return;
                        };
                        if tcp.syn() && !tcp.ack() {
                            let from = SocketAddrV4::new(ip.src_addr(), tcp.src_port());
                            self.on_syn(from, SocketAddrV4::new(dst, tcp.dst_port()));
                        }
                    }
                    IpProtocol::Udp if dst == a.dns => {}
                    IpProtocol::Udp => {
                        // Never for broadcast or multicast, and never past the queue's bound: a
                        // guest that floods and does not read only loses refusals.
                        let unicast = !dst.is_broadcast() && !dst.is_multicast();
                        if unicast && self.device.tx.len() < FRAME_QUEUE {
                            let refusal = refusal_of_datagram(&eth, &ip);
                            self.device.tx.push_back(refusal);
                        }
                        return;
                    }
                    IpProtocol::Icmp if dst == a.gateway || dst == a.dns => {}
                    _ => return,
                }
            }
            _ => return,
        }
        self.device.rx.push_back(frame);
    }

    /// A new connection: allowed ones get a listening socket (and a host connection under way);
    /// refused ones get none, so the stack answers with a reset.
    fn on_syn(&mut self, from: SocketAddrV4, to: SocketAddrV4) {
        if self.by_key.contains_key(&(from, to)) || self.connections.len() >= MAX_CONNECTIONS {
            return;
        }
        let a = self.gateway.addressing;
        let dns_over_tcp = *to.ip() == a.dns && to.port() == 53;
        if !dns_over_tcp
            && (*to.ip() == a.gateway
                || *to.ip() == a.dns
                || self.gateway.policy.check(to).is_some())
        {
            return;
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
        );
        if socket
            .listen(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*to.ip())),
                port: to.port(),
            })
            .is_err()
        {
            return;
        }
        socket.pause_synack(true);
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        let handle = self.sockets.add(socket);
        let (to_host, from_guest) = mpsc::channel(8);
        let (to_guest, from_host) = mpsc::channel(8);
        let wake = self.wake.clone();
        if dns_over_tcp {
            let policy = self.gateway.policy.clone();
            let upstreams = self.gateway.upstreams.clone();
            tokio::spawn(dns_over_tcp_session(
                policy, upstreams, from_guest, to_guest, wake,
            ));
        } else {
            tokio::spawn(relay(SocketAddr::V4(to), from_guest, to_guest, wake));
        }
        self.by_key.insert((from, to), handle);
        self.connections.insert(
            handle,
            Connection {
                key: (from, to),
                to_host: Some(to_host),
                from_host,
                pending: None,
                connected: false,
                host_finished: false,
                fin_sent: false,
                created: std::time::Instant::now(),
            },
        );
    }

    /// A host client's connection to a published port: the gateway connects to the guest's port from
    /// its own address and relays both ways, as for outbound connections.
    fn on_inbound(&mut self, inbound: Inbound) {
        if self.connections.len() >= MAX_CONNECTIONS {
            return; // dropping the stream refuses the client
        }
        let a = self.gateway.addressing;
        self.next_local_port = match self.next_local_port {
            port if port >= 65000 => 49152,
            port => port + 1,
        };
        let local = SocketAddrV4::new(a.gateway, self.next_local_port);
        let remote = SocketAddrV4::new(a.guest, inbound.guest_port);
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
        );
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        let connected = socket.connect(
            self.iface.context(),
            (IpAddress::Ipv4(*remote.ip()), remote.port()),
            (IpAddress::Ipv4(*local.ip()), local.port()),
        );
        if connected.is_err() {
            return;
        }
        let handle = self.sockets.add(socket);
        let (to_host, from_guest) = mpsc::channel(8);
        let (to_guest, from_host) = mpsc::channel(8);
        tokio::spawn(pump_stream(
            inbound.stream,
            from_guest,
            to_guest,
            self.wake.clone(),
        ));
        self.by_key.insert((remote, local), handle);
        self.connections.insert(
            handle,
            Connection {
                key: (remote, local),
                to_host: Some(to_host),
                from_host,
                pending: None,
                connected: false,
                host_finished: false,
                fin_sent: false,
                created: std::time::Instant::now(),
            },
        );
    }

    /// Moves bytes between one connection's socket and its host task.
    fn pump(&mut self, handle: SocketHandle) {
        let Some(conn) = self.connections.get_mut(&handle) else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        // Host to guest.
        loop {
            if conn.pending.is_none() {
                match conn.from_host.try_recv() {
                    Ok(HostEvent::Connected) => {
                        conn.connected = true;
                        socket.pause_synack(false);
                        continue;
                    }
                    Ok(HostEvent::Failed) => {
                        socket.abort();
                        return;
                    }
                    Ok(HostEvent::Data(data)) => conn.pending = Some((data, 0)),
                    Ok(HostEvent::Finished) => {
                        conn.host_finished = true;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        conn.host_finished = true;
                        break;
                    }
                }
            }
            let Some((data, offset)) = conn.pending.as_mut() else {
                break;
            };
            if !socket.can_send() {
                break;
            }
            match socket.send_slice(&data[*offset..]) {
                Ok(n) => *offset += n,
                Err(_) => break,
            }
            if *offset < data.len() {
                break;
            }
            conn.pending = None;
        }
        if conn.host_finished && conn.pending.is_none() && !conn.fin_sent && conn.connected {
            socket.close();
            conn.fin_sent = true;
        }
        if conn.host_finished && !conn.connected {
            socket.abort();
            return;
        }
        // Guest to host.
        while socket.can_recv() {
            let Some(to_host) = conn.to_host.as_ref() else {
                break;
            };
            match to_host.try_reserve() {
                Ok(permit) => {
                    let mut buf = vec![0u8; RELAY_CHUNK.min(socket.recv_queue().max(1))];
                    match socket.recv_slice(&mut buf) {
                        Ok(n) => {
                            buf.truncate(n);
                            permit.send(buf);
                        }
                        Err(_) => break,
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    socket.abort();
                    return;
                }
            }
        }
        use tcp::State;
        let guest_finished = matches!(
            socket.state(),
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
        );
        if guest_finished && !socket.can_recv() {
            conn.to_host = None;
        }
    }

    /// Removes connections whose socket has closed, and handshakes that never finish.
    fn reap(&mut self) {
        let mut done = Vec::new();
        for (handle, conn) in &self.connections {
            let socket = self.sockets.get::<tcp::Socket>(*handle);
            let stale = matches!(
                socket.state(),
                tcp::State::Listen | tcp::State::SynReceived | tcp::State::SynSent
            ) && conn.created.elapsed() > HANDSHAKE_TIMEOUT;
            if socket.state() == tcp::State::Closed || stale {
                done.push(*handle);
            }
        }
        for handle in done {
            if let Some(conn) = self.connections.remove(&handle) {
                self.by_key.remove(&conn.key);
            }
            self.sockets.remove(handle);
        }
    }

    fn serve_dns_queries(&mut self) {
        loop {
            let socket = self.sockets.get_mut::<udp::Socket>(self.dns_socket);
            let Ok((query, meta)) = socket.recv() else {
                return;
            };
            let query = query.to_vec();
            let to = meta.endpoint;
            let Ok(permit) = self.dns_sender.clone().try_reserve_owned() else {
                continue; // too many in flight: the guest's resolver retries
            };
            let policy = self.gateway.policy.clone();
            let upstreams = self.gateway.upstreams.clone();
            let wake = self.wake.clone();
            tokio::spawn(async move {
                let reply = dns::answer(&policy, &upstreams, &query, dns::Transport::Udp).await;
                if let Some(reply) = reply {
                    permit.send(DnsAnswer { reply, to });
                    wake.notify_one();
                }
            });
        }
    }

    fn answer_dns(&mut self, answer: DnsAnswer) {
        self.send_dns(answer.reply, answer.to);
    }

    fn send_dns(&mut self, reply: Vec<u8>, to: smoltcp::wire::IpEndpoint) {
        let dns_ip = self.gateway.addressing.dns;
        let socket = self.sockets.get_mut::<udp::Socket>(self.dns_socket);
        let mut meta = udp::UdpMetadata::from(to);
        meta.local_address = Some(IpAddress::Ipv4(dns_ip));
        let _ = socket.send_slice(&reply, meta);
    }
}

/// The host side of one connection: connect, then copy both ways until both sides are done.
async fn relay(
    target: SocketAddr,
    from_guest: mpsc::Receiver<Vec<u8>>,
    to_guest: mpsc::Sender<HostEvent>,
    wake: Arc<Notify>,
) {
    let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        let _ = to_guest.send(HostEvent::Failed).await;
        wake.notify_one();
        return;
    };
    pump_stream(stream, from_guest, to_guest, wake).await;
}

/// Relays between a connected host stream and a connection's socket (through its channels).
async fn pump_stream(
    stream: TcpStream,
    mut from_guest: mpsc::Receiver<Vec<u8>>,
    to_guest: mpsc::Sender<HostEvent>,
    wake: Arc<Notify>,
) {
    let _ = stream.set_nodelay(true);
    if to_guest.send(HostEvent::Connected).await.is_err() {
        return;
    }
    wake.notify_one();
    let (mut read, mut write) = stream.into_split();
    let upstream = async {
        while let Some(data) = from_guest.recv().await {
            wake.notify_one();
            if write.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; RELAY_CHUNK];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = to_guest.send(HostEvent::Finished).await;
                    wake.notify_one();
                    break;
                }
                Ok(n) => {
                    if to_guest
                        .send(HostEvent::Data(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    wake.notify_one();
                }
            }
        }
    };
    tokio::join!(upstream, downstream);
    drop(to_guest);
    wake.notify_one();
}

/// DNS over TCP for the guest (for answers too long for UDP): the gateway reads each
/// length-prefixed query itself and answers it as it answers UDP ones, so the guest's bytes never
/// reach a resolver unchecked (the host's may listen on its loopback).
async fn dns_over_tcp_session(
    policy: Arc<Policy>,
    upstreams: Vec<SocketAddr>,
    mut from_guest: mpsc::Receiver<Vec<u8>>,
    to_guest: mpsc::Sender<HostEvent>,
    wake: Arc<Notify>,
) {
    let send = |event| {
        let to_guest = to_guest.clone();
        let wake = wake.clone();
        async move {
            let sent = to_guest.send(event).await.is_ok();
            wake.notify_one();
            sent
        }
    };
    if !send(HostEvent::Connected).await {
        return;
    }
    // At most one incomplete message (its length fits 16 bits) and the chunk that came with it.
    let mut pending: Vec<u8> = Vec::new();
    'guest: while let Some(data) = from_guest.recv().await {
        wake.notify_one();
        pending.extend_from_slice(&data);
        while pending.len() >= 2 {
            let len = u16::from_be_bytes([pending[0], pending[1]]) as usize;
            if pending.len() < 2 + len {
                break;
            }
            let query: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            let reply = dns::answer(&policy, &upstreams, &query, dns::Transport::Tcp).await;
            let Some(reply) = reply.filter(|r| r.len() <= u16::MAX as usize) else {
                break 'guest; // not a query: the session ends
            };
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if !send(HostEvent::Data(framed)).await {
                return;
            }
        }
    }
    send(HostEvent::Finished).await;
}

/// The reply to a datagram the policy refuses: ICMP "port unreachable" from its destination, as a
/// firewall's reject sends, so a guest socket fails at once (connection refused) instead of
/// waiting. It quotes the datagram's IP header and first 8 bytes, as ICMP requires.
fn refusal_of_datagram(eth: &EthernetFrame<&[u8]>, ip: &Ipv4Packet<&[u8]>) -> Vec<u8> {
    let quoted = &ip.payload()[..ip.payload().len().min(8)];
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::PortUnreachable,
        header: Ipv4Repr {
            src_addr: ip.src_addr(),
            dst_addr: ip.dst_addr(),
            next_header: ip.next_header(),
            payload_len: quoted.len(),
            hop_limit: ip.hop_limit(),
        },
        data: quoted,
    };
    let outer = Ipv4Repr {
        src_addr: ip.dst_addr(),
        dst_addr: ip.src_addr(),
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let link = EthernetRepr {
        src_addr: EthernetAddress(GATEWAY_MAC),
        dst_addr: eth.src_addr(),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut frame = vec![0u8; link.buffer_len() + outer.buffer_len() + icmp.buffer_len()];
    let checksums = ChecksumCapabilities::default();
    let mut eth_out = EthernetFrame::new_unchecked(&mut frame[..]);
    link.emit(&mut eth_out);
    let mut ip_out = Ipv4Packet::new_unchecked(eth_out.payload_mut());
    outer.emit(&mut ip_out, &checksums);
    icmp.emit(
        &mut Icmpv4Packet::new_unchecked(ip_out.payload_mut()),
        &checksums,
    );
    frame
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = file.read_exact(&mut bytes);
    }
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{UdpPacket, UdpRepr};

    #[test]
    fn a_refused_datagram_is_answered_port_unreachable_quoting_it() {
        let guest_mac = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let to = Ipv4Addr::new(203, 0, 113, 9);
        let udp = UdpRepr {
            src_port: 40000,
            dst_port: 443,
        };
        let body = b"hello";
        let ip = Ipv4Repr {
            src_addr: GUEST_ADDRESSING.guest,
            dst_addr: to,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + body.len(),
            hop_limit: 64,
        };
        let link = EthernetRepr {
            src_addr: guest_mac,
            dst_addr: EthernetAddress(GATEWAY_MAC),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut frame = vec![0u8; link.buffer_len() + ip.buffer_len() + ip.payload_len];
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        link.emit(&mut eth);
        let mut packet = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut packet, &caps);
        udp.emit(
            &mut UdpPacket::new_unchecked(packet.payload_mut()),
            &IpAddress::Ipv4(ip.src_addr),
            &IpAddress::Ipv4(ip.dst_addr),
            body.len(),
            |b| b.copy_from_slice(body),
            &caps,
        );

        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        let packet = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let reply = refusal_of_datagram(&eth, &packet);

        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(eth.dst_addr(), guest_mac);
        let outer = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(outer.verify_checksum());
        assert_eq!(
            (outer.src_addr(), outer.dst_addr()),
            (to, GUEST_ADDRESSING.guest)
        );
        let icmp = Icmpv4Packet::new_checked(outer.payload()).unwrap();
        match Icmpv4Repr::parse(&icmp, &caps).unwrap() {
            Icmpv4Repr::DstUnreachable {
                reason,
                header,
                data,
            } => {
                assert_eq!(reason, Icmpv4DstUnreachable::PortUnreachable);
                assert_eq!(header.dst_addr, to);
                assert_eq!(header.next_header, IpProtocol::Udp);
                // The UDP header: source port 40000, destination port 443.
                assert_eq!(&data[..4], &[0x9c, 0x40, 0x01, 0xbb]);
            }
            other => panic!("{other:?}"),
        }
    }
}
