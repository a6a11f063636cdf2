//! Bounded capture of a command's output: keeps the head and the tail, counts what fell between.

use std::collections::VecDeque;

/// Captures at most `cap` bytes of a stream: the first half and the last half of what was written.
#[derive(Debug)]
pub struct CappedOutput {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        CappedOutput {
            head_cap,
            tail_cap: cap - head_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let head_room = self.head_cap - self.head.len();
        if head_room > 0 {
            let take = head_room.min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if data.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    /// Total bytes written, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept bytes as text (invalid UTF-8 replaced), with a marker where bytes were left out.
    pub fn render(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.truncated() {
            let omitted = self.total - (self.head.len() + self.tail.len()) as u64;
            text.push_str(&format!("\n[... {omitted} bytes omitted by pyro ...]\n"));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(a.len() + b.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        text.push_str(&String::from_utf8_lossy(&tail));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = CappedOutput::new(10);
        c.push(b"abc");
        c.push(b"de");
        assert_eq!(c.render(), "abcde");
        assert!(!c.truncated());
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let mut c = CappedOutput::new(8);
        for chunk in [b"0123".as_slice(), b"4567", b"89ab", b"cdef"] {
            c.push(chunk);
        }
        assert!(c.truncated());
        assert_eq!(c.total_bytes(), 16);
        assert_eq!(c.render(), "0123\n[... 8 bytes omitted by pyro ...]\ncdef");
    }

    #[test]
    fn one_huge_chunk() {
        let mut c = CappedOutput::new(4);
        c.push(b"abcdefghij");
        assert_eq!(c.render(), "ab\n[... 6 bytes omitted by pyro ...]\nij");
    }
}
