//! The bytes of a VM disk as the guest saw them, read from its image file: qcow2 (every disk pyro
//! makes) or raw (a disk from before disks were qcow2).
//!
//! Only what pyro's own images use is read: a qcow2 image with a backing file, an external data
//! file, encryption, compressed clusters or extended L2 entries is refused rather than guessed at.
//! Every offset the image names is checked against the file before it is read, and every table is
//! bounded, so a damaged or forged image gives an error, never a wild read.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use ext4_view::Ext4Read;

/// What went wrong reading an image (its message says what and where).
#[derive(Debug)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImageError {}

fn bad(message: impl Into<String>) -> ImageError {
    ImageError(message.into())
}

const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// Bits 9..=55 of an L1 or L2 entry: a cluster-aligned offset in the file.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;
/// Incompatible features read correctly by ignoring them: "dirty" (refcounts may be stale) and the
/// compression type (compressed clusters are refused anyway).
const KNOWN_INCOMPATIBLE: u64 = 1 | 1 << 3;
const CORRUPT: u64 = 1 << 1;
/// The largest L1 table read: 1 Mi entries, far past the largest disk pyro makes.
const MAX_L1_ENTRIES: u64 = 1 << 20;
/// The largest disk read: twice the largest pyro makes.
const MAX_DISK_BYTES: u64 = 2 << 40;
/// L2 tables kept in memory at once.
const L2_CACHE_TABLES: usize = 64;

/// Where a cluster of the disk is: in the file, or nowhere (it reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    At(u64),
    Zero,
}

/// The image file, and its length: every read is checked to lie inside it.
struct Source {
    file: File,
    len: u64,
}

impl Source {
    /// Reads exactly `buf.len()` bytes of the file at `offset`, which must lie inside it.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(bad(format!(
                "the disk image points past its end (offset {offset}, {} bytes)",
                buf.len()
            )));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| bad(format!("cannot read the disk image at {offset}: {e}")))
    }
}

/// A qcow2 image's map from disk offsets to clusters in the file.
struct Qcow2 {
    version: u32,
    cluster_bits: u32,
    l1: Vec<u64>,
    l2_cache: HashMap<u64, Vec<u64>>,
}

impl Qcow2 {
    /// The disk bytes one L2 table maps.
    fn l2_span(&self) -> u64 {
        1 << (2 * self.cluster_bits - 3)
    }

    fn l2_offset(&self, at: u64) -> u64 {
        let index = (at / self.l2_span()) as usize;
        self.l1.get(index).copied().unwrap_or(0) & OFFSET_MASK
    }

    /// `offset` from a table, refused unless it starts a cluster.
    fn aligned(&self, offset: u64, what: &str) -> Result<u64, ImageError> {
        if !offset.is_multiple_of(1 << self.cluster_bits) {
            return Err(bad(format!(
                "a qcow2 {what} offset ({offset}) does not start a cluster"
            )));
        }
        Ok(offset)
    }

    /// Where the cluster holding disk offset `at` is.
    fn cluster(&mut self, source: &Source, at: u64) -> Result<Cluster, ImageError> {
        let l2_offset = self.aligned(self.l2_offset(at), "L2 table")?;
        if l2_offset == 0 {
            return Ok(Cluster::Zero);
        }
        let l2_index = ((at >> self.cluster_bits) & ((1 << (self.cluster_bits - 3)) - 1)) as usize;
        let entry = match self.l2_cache.get(&l2_offset) {
            Some(table) => table[l2_index],
            None => {
                let mut raw = vec![0u8; 1 << self.cluster_bits];
                source.read(l2_offset, &mut raw)?;
                let table: Vec<u64> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
                let entry = table[l2_index];
                if self.l2_cache.len() >= L2_CACHE_TABLES {
                    self.l2_cache.clear();
                }
                self.l2_cache.insert(l2_offset, table);
                entry
            }
        };
        if entry & L2_COMPRESSED != 0 {
            return Err(bad(
                "the disk image has compressed clusters, which pyro never makes",
            ));
        }
        if entry & L2_ZERO != 0 {
            if self.version < 3 {
                return Err(bad("a qcow2 version 2 image uses the zero flag"));
            }
            return Ok(Cluster::Zero);
        }
        let offset = self.aligned(entry & OFFSET_MASK, "data cluster")?;
        if offset == 0 {
            return Ok(Cluster::Zero);
        }
        Ok(Cluster::At(offset))
    }
}

enum Layout {
    Raw,
    Qcow2(Qcow2),
}

/// A raw image is read in units of this size.
const RAW_UNIT: u64 = 1 << 20;

/// A VM disk image, opened read-only.
pub struct Image {
    source: Source,
    size: u64,
    layout: Layout,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(word)
}

impl Image {
    /// Opens `file` as `format` ("qcow2" or "raw"), a disk of at most `max_size` bytes.
    pub fn open(file: File, format: &str, max_size: u64) -> Result<Image, ImageError> {
        let len = file
            .metadata()
            .map_err(|e| bad(format!("cannot inspect the disk image: {e}")))?
            .len();
        let source = Source { file, len };
        let (size, layout) = match format {
            "raw" => (len, Layout::Raw),
            "qcow2" => open_qcow2(&source)?,
            other => return Err(bad(format!("unknown disk image format '{other}'"))),
        };
        if size > max_size {
            return Err(bad(format!(
                "the disk image claims {size} bytes, more than the workspace's disk ({max_size})"
            )));
        }
        Ok(Image {
            source,
            size,
            layout,
        })
    }

    /// The disk's size as the guest saw it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The size of one unit [`Image::clusters`] reports.
    pub fn cluster_size(&self) -> u64 {
        match &self.layout {
            Layout::Raw => RAW_UNIT,
            Layout::Qcow2(q) => 1 << q.cluster_bits,
        }
    }

    fn cluster(&mut self, at: u64) -> Result<Cluster, ImageError> {
        match &mut self.layout {
            Layout::Raw => Ok(Cluster::At(at - at % RAW_UNIT)),
            Layout::Qcow2(q) => q.cluster(&self.source, at),
        }
    }

    /// Reads `buf.len()` bytes of the disk at `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(bad(format!(
                "read past the disk's end (offset {offset}, {} bytes)",
                buf.len()
            )));
        }
        let cluster_size = self.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let within = at % cluster_size;
            let n = ((cluster_size - within) as usize).min(buf.len() - done);
            match self.cluster(at)? {
                Cluster::Zero => buf[done..done + n].fill(0),
                Cluster::At(start) => self.source.read(start + within, &mut buf[done..done + n])?,
            }
            done += n;
        }
        Ok(())
    }

    /// Calls `visit` with the disk offset of each cluster the image holds data for, in order.
    /// Clusters that read as zeros are skipped (for a raw image: none is). A qcow2 image whose live
    /// table maps one cluster of the file to two places is refused: qcow2 never does that, and a
    /// forged one could make a copy far larger than the image.
    pub fn for_each_cluster(
        &mut self,
        mut visit: impl FnMut(&mut Image, u64) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let cluster_size = self.cluster_size();
        let mut seen = vec![0u64; (self.source.len / cluster_size + 1).div_ceil(64) as usize];
        let mut at = 0u64;
        while at < self.size {
            if let Layout::Qcow2(q) = &self.layout {
                // A whole L2 table's span is skipped at once when it has none.
                if q.l2_offset(at) == 0 {
                    at = (at / q.l2_span() + 1) * q.l2_span();
                    continue;
                }
            }
            match self.cluster(at)? {
                Cluster::Zero => {}
                Cluster::At(host) => {
                    if matches!(self.layout, Layout::Qcow2(_)) {
                        let index = (host / cluster_size) as usize;
                        let (word, bit) = (index / 64, 1u64 << (index % 64));
                        // Inside the file (checked when read), so inside the map.
                        if seen.get(word).is_some_and(|w| w & bit != 0) {
                            return Err(bad(format!(
                                "the disk image maps its cluster at {host} twice"
                            )));
                        }
                        if let Some(w) = seen.get_mut(word) {
                            *w |= bit;
                        }
                    }
                    visit(self, at)?;
                }
            }
            at += cluster_size;
        }
        Ok(())
    }
}

fn open_qcow2(source: &Source) -> Result<(u64, Layout), ImageError> {
    let mut header = [0u8; 104];
    source.read(0, &mut header[..72])?;
    if be32(&header, 0) != QCOW2_MAGIC {
        return Err(bad("the disk image is not qcow2"));
    }
    let version = be32(&header, 4);
    if !(2..=3).contains(&version) {
        return Err(bad(format!("qcow2 version {version} is not supported")));
    }
    if be64(&header, 8) != 0 {
        return Err(bad(
            "the disk image has a backing file, which pyro never makes",
        ));
    }
    let cluster_bits = be32(&header, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad(format!(
            "qcow2 cluster bits {cluster_bits} out of range"
        )));
    }
    let size = be64(&header, 24);
    if size > MAX_DISK_BYTES {
        return Err(bad(format!(
            "the disk image claims {size} bytes, more than pyro makes"
        )));
    }
    if be32(&header, 32) != 0 {
        return Err(bad("the disk image is encrypted, which pyro never makes"));
    }
    let l1_size = u64::from(be32(&header, 36));
    let l1_offset = be64(&header, 40);
    if !l1_offset.is_multiple_of(1 << cluster_bits) {
        return Err(bad(format!(
            "the qcow2 L1 table offset ({l1_offset}) does not start a cluster"
        )));
    }
    if version == 3 {
        source.read(72, &mut header[72..104])?;
        let incompatible = be64(&header, 72);
        if incompatible & CORRUPT != 0 {
            return Err(bad("the disk image is marked corrupt"));
        }
        if incompatible & !KNOWN_INCOMPATIBLE != 0 {
            return Err(bad(format!(
                "the disk image uses qcow2 features pyro does not read ({incompatible:#x})"
            )));
        }
    }
    let span = 1u64 << (2 * cluster_bits - 3);
    if l1_size > MAX_L1_ENTRIES || l1_size < size.div_ceil(span) {
        return Err(bad(format!(
            "the qcow2 L1 table ({l1_size} entries) does not fit the disk's size"
        )));
    }
    let mut raw = vec![0u8; (l1_size * 8) as usize];
    source.read(l1_offset, &mut raw)?;
    let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
    Ok((
        size,
        Layout::Qcow2(Qcow2 {
            version,
            cluster_bits,
            l1,
            l2_cache: HashMap::new(),
        }),
    ))
}

impl Ext4Read for Image {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.read_at(start_byte, dst).map_err(|e| Box::new(e) as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A qcow2 image of 4 clusters of 512 bytes: cluster 1 holds `data`, the rest is unallocated.
    fn tiny_qcow2(data: &[u8; 512], l2_entry_flags: u64) -> File {
        let cluster = 512u64;
        let mut bytes = vec![0u8; 4 * cluster as usize];
        bytes[0..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&9u32.to_be_bytes());
        bytes[24..32].copy_from_slice(&(4 * cluster).to_be_bytes());
        bytes[36..40].copy_from_slice(&1u32.to_be_bytes());
        bytes[40..48].copy_from_slice(&cluster.to_be_bytes());
        // L1 at cluster 1 points to the L2 at cluster 2, whose entry 1 points to cluster 3.
        bytes[512..520].copy_from_slice(&(2 * cluster).to_be_bytes());
        bytes[1024 + 8..1024 + 16].copy_from_slice(&((3 * cluster) | l2_entry_flags).to_be_bytes());
        bytes[1536..2048].copy_from_slice(data);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        file
    }

    #[test]
    fn a_qcow2_image_reads_its_clusters_and_zeros_elsewhere() {
        let data = [7u8; 512];
        let mut image = Image::open(tiny_qcow2(&data, 0), "qcow2", 1 << 20).unwrap();
        assert_eq!(image.size(), 2048);
        let mut buf = vec![1u8; 1024];
        image.read_at(256, &mut buf).unwrap();
        assert!(buf[..256].iter().all(|&b| b == 0));
        assert!(buf[256..768].iter().all(|&b| b == 7));
        assert!(buf[768..].iter().all(|&b| b == 0));
        let mut found = Vec::new();
        image
            .for_each_cluster(|_, at| {
                found.push(at);
                Ok(())
            })
            .unwrap();
        assert_eq!(found, vec![512]);
        assert!(image.read_at(2000, &mut buf).is_err());
    }

    #[test]
    fn what_pyro_never_makes_is_refused() {
        let data = [7u8; 512];
        let mut image = Image::open(tiny_qcow2(&data, L2_COMPRESSED), "qcow2", 1 << 20).unwrap();
        assert!(image.read_at(512, &mut [0u8; 16]).is_err());
        let mut zero = Image::open(tiny_qcow2(&data, L2_ZERO), "qcow2", 1 << 20).unwrap();
        let mut buf = [1u8; 16];
        zero.read_at(512, &mut buf).unwrap();
        assert_eq!(buf, [0u8; 16]);
        let raw = tempfile::tempfile().unwrap();
        assert!(Image::open(raw, "qcow2", 1 << 20).is_err());
        // Two disk clusters mapped to one cluster of the file: refused before a copy is made.
        let twice = tiny_qcow2(&data, 0);
        twice
            .write_all_at(&(3u64 * 512).to_be_bytes(), 1024)
            .unwrap();
        let mut twice = Image::open(twice, "qcow2", 1 << 20).unwrap();
        let copied = twice.for_each_cluster(|_, _| Ok(()));
        assert!(copied.is_err_and(|e| e.0.contains("twice")));
        assert!(
            Image::open(tiny_qcow2(&data, 0), "qcow2", 1024).is_err(),
            "larger than the disk"
        );
    }
}
