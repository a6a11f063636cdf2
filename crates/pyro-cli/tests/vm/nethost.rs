//! A test host in a network namespace of its own (joined to this one by a veth pair), and one-shot
//! HTTP servers, for tests of what a guest can reach. Needs root and iproute2's `ip`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's `ip` runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct TestHost {
    name: String,
    host_side: String,
    /// The test host's address, on a /30 of its own.
    pub addr: Ipv4Addr,
}

impl TestHost {
    pub fn new() -> TestHost {
        let n = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let name = format!("pyro-test-{}-{n}", std::process::id());
        let host_side = format!("pyth{n}");
        let ns_side = format!("pytn{n}");
        let host_addr = format!("10.213.{n}.1/30");
        let addr = Ipv4Addr::new(10, 213, n as u8, 2);
        let _ = Command::new("ip")
            .args(["link", "del", &host_side])
            .output();
        ip(&["netns", "add", &name]);
        let host = TestHost {
            name: name.clone(),
            host_side: host_side.clone(),
            addr,
        };
        ip(&[
            "link", "add", &host_side, "type", "veth", "peer", "name", &ns_side,
        ]);
        ip(&["link", "set", &ns_side, "netns", &name]);
        ip(&["addr", "add", &host_addr, "dev", &host_side]);
        ip(&["link", "set", &host_side, "up"]);
        let in_ns = |args: &[&str]| host.in_namespace(|| ip(args));
        in_ns(&["addr", "add", &format!("{addr}/30"), "dev", &ns_side]);
        in_ns(&["link", "set", &ns_side, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        host
    }

    /// Runs `work` on a thread inside the namespace (children it starts are in it too). Unlike `ip netns
    /// exec`, this needs no mount namespace, so it works in a chroot as well.
    fn in_namespace(&self, work: impl FnOnce() + Send) {
        let netns = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns moves only this thread into the namespace.
                    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    work();
                })
                .join()
                .unwrap();
        });
    }

    /// Serves `body` over HTTP on `port` inside the namespace until dropped.
    pub fn serve(&self, port: u16, body: Vec<u8>) -> Server {
        let netns = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let addr = SocketAddr::from((self.addr, port));
        let thread = std::thread::spawn(move || {
            // SAFETY: setns moves only this thread into the namespace.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = TcpListener::bind(addr).unwrap();
            ready_tx.send(()).unwrap();
            http_loop(listener, &body, &stopping);
        });
        ready_rx.recv().unwrap();
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_side])
            .output();
    }
}

/// A server on the host itself, at `addr` (e.g. loopback only).
pub fn serve_on_host(addr: &str, body: Vec<u8>) -> (Server, u16) {
    let listener = TcpListener::bind(addr).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || http_loop(listener, &body, &stopping));
    (
        Server {
            stop,
            thread: Some(thread),
        },
        port,
    )
}

pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn http_loop(listener: TcpListener, body: &[u8], stop: &AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                // Read the whole request first: closing with unread bytes would reset the connection.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
                let _ = conn.shutdown(std::net::Shutdown::Write);
                let _ = conn.read_to_end(&mut request);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
