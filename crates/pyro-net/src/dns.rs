//! DNS for the guest: its queries go to the host's own resolvers, from the host. Only as much of the
//! message format as that needs: the question's name (to apply an allow list), the A records of an
//! answer (to learn the addresses of allowed names), and refusals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::policy::Policy;

/// How long one upstream resolver may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest DNS message handled over UDP (EDNS0 answers stay below this); over TCP a message
/// may take all of its 16-bit length.
pub const MAX_MESSAGE: usize = 4096;

/// How a query reached the gateway, and so how it is asked upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// For answers too long for UDP: asked of the resolvers over TCP, one message at a time.
    Tcp,
}

/// The gateway's reply to a guest's `query`: refused when the policy does not answer its name,
/// else the host's resolvers' answer (whose addresses an allow list then learns), else a server
/// failure. `None` for a message that is not a query at all. Only checked queries ever reach a
/// resolver, whichever the transport.
pub async fn answer(
    policy: &Policy,
    upstreams: &[SocketAddr],
    query: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let name = question_name(query);
    if !name.as_deref().is_some_and(|n| policy.answers(n)) {
        return reply_without_answer(query, 5);
    }
    let answer = match transport {
        Transport::Udp => resolve(query, upstreams).await,
        // Some resolvers take no TCP: their UDP answer (perhaps truncated) beats none.
        Transport::Tcp => match resolve_over_tcp(query, upstreams).await {
            Some(answer) => Some(answer),
            None => resolve(query, upstreams).await,
        },
    };
    match answer {
        Some(answer) => {
            if let Some(name) = &name {
                policy.learn(name, &a_records(&answer));
            }
            Some(answer)
        }
        None => reply_without_answer(query, 2),
    }
}

/// The host's resolvers, from `/etc/resolv.conf` (loopback resolvers such as systemd-resolved's
/// included: the host asks them, the guest never reaches them).
pub fn upstreams() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_resolv_conf(&text)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|addr| addr.split('%').next()?.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The name asked about, if the message is a query with exactly one question.
pub fn question_name(message: &[u8]) -> Option<String> {
    if message.len() < 12 || message[2] & 0x80 != 0 {
        return None;
    }
    let questions = u16::from_be_bytes([message[4], message[5]]);
    if questions != 1 {
        return None;
    }
    read_name(message, 12).map(|(name, _)| name)
}

/// Reads a (possibly compressed) name at `offset`: the name and the offset just past it.
fn read_name(message: &[u8], mut offset: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *message.get(offset)? as usize;
        if len & 0xc0 == 0xc0 {
            let pointer = ((len & 0x3f) << 8) | *message.get(offset + 1)? as usize;
            end.get_or_insert(offset + 2);
            jumps += 1;
            if jumps > 16 || pointer >= message.len() {
                return None;
            }
            offset = pointer;
            continue;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        if len == 0 {
            let end = end.unwrap_or(offset + 1);
            return Some((labels.join(".").to_ascii_lowercase(), end));
        }
        let label = message.get(offset + 1..offset + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        if labels.len() > 127 {
            return None;
        }
        offset += 1 + len;
    }
}

/// The IPv4 addresses in an answer's A records (any name: CNAME chains end in the asked name's
/// addresses).
pub fn a_records(message: &[u8]) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut parse = || -> Option<()> {
        if message.len() < 12 {
            return None;
        }
        let questions = u16::from_be_bytes([message[4], message[5]]) as usize;
        let answers = u16::from_be_bytes([message[6], message[7]]) as usize;
        let mut offset = 12;
        for _ in 0..questions {
            offset = read_name(message, offset)?.1 + 4;
        }
        for _ in 0..answers {
            offset = read_name(message, offset)?.1;
            let header = message.get(offset..offset + 10)?;
            let kind = u16::from_be_bytes([header[0], header[1]]);
            let class = u16::from_be_bytes([header[2], header[3]]);
            let len = u16::from_be_bytes([header[8], header[9]]) as usize;
            let data = message.get(offset + 10..offset + 10 + len)?;
            if kind == 1 && class == 1 && len == 4 {
                found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            }
            offset += 10 + len;
        }
        Some(())
    };
    let _ = parse();
    found
}

/// A reply to `query` with no answers and response code `rcode` (2 server failure, 5 refused).
pub fn reply_without_answer(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let end = read_name(query, 12)?.1 + 4;
    let mut reply = query.get(..end)?.to_vec();
    reply[2] = 0x80 | (query[2] & 0x01); // a response, keeping "recursion desired"
    reply[3] = 0x80 | (rcode & 0x0f); // recursion available
    reply[4..6].copy_from_slice(&1u16.to_be_bytes());
    reply[6..12].fill(0);
    Some(reply)
}

/// Asks the host's resolvers, in order, and returns the first answer to this query.
pub async fn resolve(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = match upstream {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
            SocketAddr::V6(_) => "[::]:0".parse().ok()?,
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let n = socket.recv(&mut buf).await.ok()?;
                // Only the answer to this query (same id), not a stray datagram.
                if n >= 12 && buf[..2] == query[..2] {
                    return Some(buf[..n].to_vec());
                }
            }
        })
        .await;
        if let Ok(Some(answer)) = answer {
            return Some(answer);
        }
    }
    None
}

/// Asks the host's resolvers over TCP, in order, and returns the first answer to this query.
pub async fn resolve_over_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let len = u16::try_from(query.len()).ok()?;
    for upstream in upstreams {
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await.ok()?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream.write_all(&framed).await.ok()?;
            let mut prefix = [0u8; 2];
            stream.read_exact(&mut prefix).await.ok()?;
            let mut answer = vec![0u8; u16::from_be_bytes(prefix) as usize];
            stream.read_exact(&mut answer).await.ok()?;
            (answer.len() >= 12 && answer[..2] == query[..2]).then_some(answer)
        };
        if let Ok(Some(answer)) = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
            return Some(answer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`, type A.
    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn questions_answers_and_refusals() {
        let q = query("Deb.Debian.org");
        assert_eq!(question_name(&q).as_deref(), Some("deb.debian.org"));
        // An answer: the question, then a CNAME and an A record using compressed names.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 2;
        a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 80]);
        assert_eq!(a_records(&a), vec![Ipv4Addr::new(203, 0, 113, 80)]);
        assert_eq!(question_name(&a), None, "an answer is not a query");
        let refused = reply_without_answer(&q, 5).unwrap();
        assert_eq!(&refused[..2], &q[..2]);
        assert_eq!(refused[3] & 0x0f, 5);
        assert_eq!(question_name(&refused[..]), None);
        // Garbage and pointer loops are not answers.
        assert!(a_records(&[0xff; 40]).is_empty());
        let mut looped = q.clone();
        looped.truncate(12);
        looped.extend_from_slice(&[0xc0, 12]);
        assert_eq!(question_name(&looped), None);
    }

    #[test]
    fn resolv_conf_lists_the_upstreams() {
        let text = "# comment\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bogus\n";
        let got = parse_resolv_conf(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], "10.255.255.53:53".parse().unwrap());
    }
}
