//! Stream-optimized VMDK (monolithic sparse extent, compressed grains), the disk format
//! inside an OVA, made from the raw image.
//!
//! No Rust crate writes VMDK, and the stream has to be laid out the way vSphere's
//! Content Library accepts it (the layout of open-vmdk's `vmdk-convert`, which Talos
//! runs from 1.11 on), so this module writes it itself. The reference is VMware's
//! "Virtual Disk Format 1.1" (§ "The Sparse Extent Header", "Stream-Optimized
//! Compressed Sparse Extents"), with open-vmdk's `vmdk/sparse.c` for the choices the
//! specification leaves open:
//!
//! ```text
//! sector 0        sparse extent header v3: flags valid-newline | compressed | embedded-LBA,
//!                 capacity, grain 128 sectors, 512 entries per grain table, deflate
//! sectors 1..21   the text descriptor (createType "streamOptimized"), zero-padded
//! sector 21..     grain directory, then every grain table (preallocated, in order)
//! overHead..      grains: u64 LBA, u32 compressed size, zlib stream, padded to a sector;
//!                 only grains that are not all zeros
//! last sector     end-of-stream marker (all zeros)
//! ```
//!
//! Grains are read from the raw image where it holds data (holes are skipped without
//! reading), compressed on every core, and written in disk order with a bounded window
//! of grains in flight, so memory does not grow with the image. The metadata at the
//! front (header, descriptor, tables) is written last. The descriptor's CID and
//! `ddb.longContentID` are taken from a SHA-256 of the grain stream, so the same raw image
//! always gives the same bytes, whatever the number of threads.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, mpsc};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::io::is_zero;

const SECTOR: u64 = 512;
/// Sectors per grain (64 KiB grains).
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per grain table (a 2 KiB table covering 32 MiB).
const GTES_PER_GT: u64 = 512;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
const GD_OFFSET: u64 = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;

const FLAG_VALID_NEWLINE: u32 = 1 << 0;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_EMBEDDED_LBA: u32 = 1 << 17;
const COMPRESS_DEFLATE: u16 = 1;

/// zlib level of the grains. Disk images are mostly the kernel and the xz-compressed
/// initramfs, which no level shrinks further (those grains are stored, see
/// [`Compressors::incompressible`]); the file-system metadata around them compresses
/// about as well at 6 as at 9, for half the time.
const LEVEL: u32 = 6;

/// Grains read ahead of the one being written, per compressing thread.
const WINDOW_PER_THREAD: usize = 16;

const OUT: &str = "<VMDK stream>";

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the VMDK.
    pub size: u64,
    /// Grains stored (the rest of the disk reads as zeros).
    pub grains: u64,
}

/// The table geometry of a disk of `capacity` sectors.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    capacity: u64,
    grains: u64,
    tables: u64,
    gd_sectors: u64,
    /// First sector after the metadata: where the grains start.
    overhead: u64,
}

impl Geometry {
    fn new(size: u64) -> Geometry {
        let capacity = size.div_ceil(SECTOR);
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let tables = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (tables * 4).div_ceil(SECTOR);
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        Geometry {
            capacity,
            grains,
            tables,
            gd_sectors,
            overhead: GD_OFFSET + gd_sectors + tables * gt_sectors,
        }
    }
}

/// The least and the most bytes the VMDK of a raw image of `size` bytes can take: all
/// grains zero, or every grain stored and incompressible.
pub fn size_bounds(size: u64) -> (u64, u64) {
    let geo = Geometry::new(size);
    // A grain record: 12 bytes of header + zlib's bound for 64 KiB, padded: < 130 sectors.
    let record = 130 * SECTOR;
    (
        (geo.overhead + 1) * SECTOR,
        (geo.overhead + 1) * SECTOR + geo.grains * record,
    )
}

/// Writes the stream-optimized VMDK of the raw image at `raw` into `out`, starting at
/// byte `offset` (a multiple of 512; nothing else of `out` is touched), compressing on
/// `threads` threads (at least one). The bytes do not depend on `threads`.
pub fn convert(raw: &Path, out: &File, offset: u64, threads: usize) -> Result<Written> {
    debug_assert!(offset.is_multiple_of(SECTOR));
    let input = File::open(raw).at(raw)?;
    let size = input.metadata().at(raw)?.len();
    let geo = Geometry::new(size);

    let runs = crate::io::sparse::data_runs(&input, size).reading(raw)?;
    let mut grains = runs
        .iter()
        .flat_map(|&(start, end)| start / GRAIN..end.div_ceil(GRAIN))
        .scan(None, |last, g| {
            let fresh = *last != Some(g);
            *last = Some(g);
            Some(fresh.then_some(g))
        })
        .flatten();

    let mut table = vec![0u32; geo.grains as usize];
    let mut hash = Sha256::new();
    hash.update(geo.capacity.to_le_bytes());
    let mut writer = SectorWriter::new(out, offset, geo.overhead);
    let threads = threads.max(1);
    let window = threads * WINDOW_PER_THREAD;

    let (job_tx, job_rx) = mpsc::sync_channel::<(usize, u64, Vec<u8>)>(window);
    let (done_tx, done_rx) = mpsc::channel::<(usize, u64, std::io::Result<Option<Vec<u8>>>)>();
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|scope| -> Result<()> {
        // Owned here, so the threads see the end of the jobs when this returns, even early.
        let job_tx = job_tx;
        for _ in 0..threads {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            scope.spawn(move || {
                let mut z = Compressors::new();
                loop {
                    let job = job_rx.lock().expect("no panics holding the lock").recv();
                    let Ok((seq, grain, data)) = job else { return };
                    let record = grain_record(&mut z, grain, &data);
                    if done_tx.send((seq, grain, record)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);

        let (mut sent, mut next) = (0usize, 0usize);
        let mut ready = BTreeMap::new();
        loop {
            while sent - next < window {
                let Some(grain) = grains.next() else { break };
                let at = grain * GRAIN;
                let mut data = vec![0u8; GRAIN as usize];
                let len = GRAIN.min(size - at) as usize;
                input.read_exact_at(&mut data[..len], at).reading(raw)?;
                job_tx
                    .send((sent, grain, data))
                    .map_err(|_| Error::io_during("compressing grains", broken()))?;
                sent += 1;
            }
            if next == sent {
                return Ok(());
            }
            let (seq, grain, record) = done_rx
                .recv()
                .map_err(|_| Error::io_during("compressing grains", broken()))?;
            ready.insert(seq, (grain, record));
            while let Some((grain, record)) = ready.remove(&next) {
                next += 1;
                let Some(record) = record.map_err(|e| Error::io_during("compressing grains", e))?
                else {
                    continue;
                };
                let sector = u32::try_from(writer.sector()).map_err(|_| {
                    Error::invalid(format!(
                        "{}: the VMDK would exceed 2 TiB, the reach of its grain tables",
                        raw.display()
                    ))
                })?;
                table[grain as usize] = sector;
                hash.update(&record);
                writer.write(&record)?;
            }
        }
    })?;

    // End-of-stream marker: a marker sector of zeros.
    writer.write(&[0u8; SECTOR as usize])?;
    let end = writer.finish()?;
    let stored = table.iter().filter(|&&s| s != 0).count() as u64;
    let digest: [u8; 32] = hash.finalize().into();
    out.write_all_at(&metadata(&geo, &table, &digest), offset)
        .at(OUT)?;
    Ok(Written {
        size: end * SECTOR,
        grains: stored,
    })
}

fn broken() -> std::io::Error {
    std::io::Error::other("a compressing thread stopped")
}

/// A compressing thread's zlib streams: the grains' level, stored (level 0) for grains
/// that do not compress, and level 1 to judge that on a sample.
struct Compressors {
    normal: flate2::Compress,
    stored: flate2::Compress,
    probe: flate2::Compress,
    sample: Vec<u8>,
}

impl Compressors {
    fn new() -> Self {
        let z = |level| flate2::Compress::new(flate2::Compression::new(level), true);
        Compressors {
            normal: z(LEVEL),
            stored: z(0),
            probe: z(1),
            sample: Vec::with_capacity(2 * PROBE),
        }
    }

    /// Whether deflate gains under 2% on the first [`PROBE`] bytes of `data` at level 1:
    /// the kernel and the xz-compressed initramfs, where searching for matches at the
    /// grains' level costs most of the build for nothing. Such grains are stored.
    fn incompressible(&mut self, data: &[u8]) -> std::io::Result<bool> {
        let sample = &data[..data.len().min(PROBE)];
        self.sample.clear();
        deflate_into(&mut self.probe, sample, &mut self.sample)?;
        Ok(self.sample.len() * 100 >= sample.len() * 98)
    }
}

/// Bytes of a grain compressed at level 1 to judge whether it compresses.
const PROBE: usize = 4096;

/// One complete zlib stream of `data` appended to `out`.
fn deflate_into(z: &mut flate2::Compress, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    z.reset();
    out.reserve(data.len() + data.len() / 64 + 64);
    loop {
        let consumed = z.total_in() as usize;
        let status = z
            .compress_vec(&data[consumed..], out, flate2::FlushCompress::Finish)
            .map_err(std::io::Error::other)?;
        if status == flate2::Status::StreamEnd {
            return Ok(());
        }
        out.reserve(4096);
    }
}

/// The grain's on-disk record (LBA, compressed size, zlib data, zero padding to a
/// sector), or `None` when the grain is all zeros and is not stored. The choice of level
/// depends on the grain's bytes only, so the output does not depend on the threads.
fn grain_record(z: &mut Compressors, grain: u64, data: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    if is_zero(data) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
    out.extend_from_slice(&(grain * GRAIN_SECTORS).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let stream = if z.incompressible(data)? {
        &mut z.stored
    } else {
        &mut z.normal
    };
    deflate_into(stream, data, &mut out)?;
    let compressed = (out.len() - 12) as u32;
    out[8..12].copy_from_slice(&compressed.to_le_bytes());
    out.resize(out.len().next_multiple_of(SECTOR as usize), 0);
    Ok(Some(out))
}

/// Sequential writes at a sector position of a VMDK that starts at `base` in its file,
/// gathered into large writes.
struct SectorWriter<'a> {
    out: &'a File,
    base: u64,
    /// Offset of `buf[0]` in the VMDK.
    at: u64,
    buf: Vec<u8>,
}

impl<'a> SectorWriter<'a> {
    const FLUSH: usize = 1 << 20;

    fn new(out: &'a File, base: u64, sector: u64) -> Self {
        SectorWriter {
            out,
            base,
            at: sector * SECTOR,
            buf: Vec::with_capacity(Self::FLUSH + GRAIN as usize * 2),
        }
    }

    /// The VMDK sector the next write goes to.
    fn sector(&self) -> u64 {
        (self.at + self.buf.len() as u64) / SECTOR
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        debug_assert!(bytes.len().is_multiple_of(SECTOR as usize));
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= Self::FLUSH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .write_all_at(&self.buf, self.base + self.at)
            .at(OUT)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left; returns the end, in sectors.
    fn finish(mut self) -> Result<u64> {
        self.flush()?;
        Ok(self.at / SECTOR)
    }
}

/// Header, descriptor, grain directory and grain tables: the first `overhead` sectors.
fn metadata(geo: &Geometry, table: &[u32], digest: &[u8; 32]) -> Vec<u8> {
    let mut m = vec![0u8; (geo.overhead * SECTOR) as usize];
    let h = &mut m[..SECTOR as usize];
    h[0..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12]
        .copy_from_slice(&(FLAG_VALID_NEWLINE | FLAG_COMPRESSED | FLAG_EMBEDDED_LBA).to_le_bytes());
    h[12..20].copy_from_slice(&geo.capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // 48..56: no redundant grain directory.
    h[56..64].copy_from_slice(&GD_OFFSET.to_le_bytes());
    h[64..72].copy_from_slice(&geo.overhead.to_le_bytes());
    // 72: clean shutdown; 73..77: the newline detection characters.
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());

    let text = descriptor(geo.capacity, digest);
    let d = (DESCRIPTOR_OFFSET * SECTOR) as usize;
    m[d..d + text.len()].copy_from_slice(text.as_bytes());

    // The directory points at the tables, which follow it in order.
    let gd = (GD_OFFSET * SECTOR) as usize;
    let first_gt = GD_OFFSET + geo.gd_sectors;
    let gt_sectors = GTES_PER_GT * 4 / SECTOR;
    for t in 0..geo.tables {
        let sector = (first_gt + t * gt_sectors) as u32;
        let at = gd + t as usize * 4;
        m[at..at + 4].copy_from_slice(&sector.to_le_bytes());
    }
    let gts = (first_gt * SECTOR) as usize;
    for (g, &sector) in table.iter().enumerate() {
        let at = gts + g * 4;
        m[at..at + 4].copy_from_slice(&sector.to_le_bytes());
    }
    m
}

/// The embedded descriptor of a disk of `capacity` sectors; CID and content ID from
/// `digest`. It fits the 20 sectors reserved for it (about 500 bytes).
fn descriptor(capacity: u64, digest: &[u8; 32]) -> String {
    let word = |i: usize| u32::from_be_bytes(digest[i * 4..i * 4 + 4].try_into().expect("4"));
    // 0xffffffff and 0xfffffffe mean "no parent" and "unknown" to VMware.
    let mut cid = word(0);
    if cid >= 0xffff_fffe {
        cid = word(1) & 0x7fff_ffff;
    }
    let cylinders = if capacity > 65535 * 255 * 63 {
        65535
    } else {
        capacity.div_ceil(255 * 63)
    };
    let text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"disk\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.longContentID = \"{:08x}{:08x}{:08x}{cid:08x}\"\n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.toolsInstallType = \"4\"\n\
         ddb.toolsVersion = \"2147483647\"\n",
        word(2),
        word(3),
        word(4),
    );
    debug_assert!(text.len() as u64 <= DESCRIPTOR_SECTORS * SECTOR);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    /// Reads a VMDK written by [`convert`] back to the raw bytes, following the header,
    /// the grain directory and tables and inflating each grain.
    fn read_back(vmdk: &[u8]) -> Vec<u8> {
        let u32_at = |at: usize| u32::from_le_bytes(vmdk[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(vmdk[at..at + 8].try_into().unwrap());
        assert_eq!(&vmdk[0..4], b"KDMV");
        let capacity = u64_at(12);
        let gd = u64_at(56) as usize * 512;
        let mut raw = vec![0u8; capacity as usize * 512];
        let grains = capacity.div_ceil(128) as usize;
        for g in 0..grains {
            let gt = u32_at(gd + g / 512 * 4) as usize * 512;
            let sector = u32_at(gt + g % 512 * 4) as usize;
            if sector == 0 {
                continue;
            }
            let at = sector * 512;
            assert_eq!(u64_at(at), g as u64 * 128, "embedded LBA");
            let len = u32_at(at + 8) as usize;
            let mut data = Vec::new();
            flate2::read::ZlibDecoder::new(&vmdk[at + 12..at + 12 + len])
                .read_to_end(&mut data)
                .unwrap();
            assert_eq!(data.len(), 65536);
            let end = (g * 65536 + 65536).min(raw.len());
            raw[g * 65536..end].copy_from_slice(&data[..end - g * 65536]);
        }
        assert_eq!(&vmdk[vmdk.len() - 512..], &[0u8; 512], "EOS marker");
        raw
    }

    #[test]
    fn round_trips_and_does_not_depend_on_threads() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let mut f = File::create(&raw).unwrap();
        // 70 MiB + 3 sectors: more than two grain tables and a partial last grain.
        let size = (70 << 20) + 1536;
        f.set_len(size).unwrap();
        let mut x = 0x2545F4914F6CDD1Du64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all(&noise).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(&b"talos ".repeat(50_000)).unwrap();
        f.seek(SeekFrom::Start(size - 100)).unwrap();
        f.write_all(&[9u8; 100]).unwrap();
        // A written block of zeros is not stored either.
        f.seek(SeekFrom::Start(60 << 20)).unwrap();
        f.write_all(&vec![0u8; 1 << 20]).unwrap();
        drop(f);

        let build = |threads: usize| {
            let path = dir.path().join(format!("disk-{threads}.vmdk"));
            let out = crate::io::create_rw(&path).unwrap();
            // Written at an offset, as inside an OVA: the bytes before it are untouched.
            out.write_all_at(b"before", 0).unwrap();
            let written = convert(&raw, &out, 1024, threads).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..6], b"before");
            assert_eq!(written.size + 1024, bytes.len() as u64);
            let (least, most) = size_bounds(size);
            assert!(least <= written.size && written.size <= most);
            (written, bytes[1024..].to_vec())
        };
        let (written, one) = build(1);
        let (_, three) = build(3);
        assert!(one == three, "same bytes with 1 and 3 threads");
        let expected = std::fs::read(&raw).unwrap();
        let mut back = read_back(&one);
        back.truncate(expected.len());
        assert!(back == expected, "reads back as the raw image");
        // 300 000 bytes of noise: 5 grains; the text: 5; the tail: 1.
        assert_eq!(written.grains, 11);
        let text = std::str::from_utf8(&one[512..512 + 600]).unwrap();
        assert!(text.contains("createType=\"streamOptimized\""), "{text}");
        assert!(text.contains(&format!("RW {} SPARSE \"disk\"", size / 512)));
    }

    #[test]
    fn incompressible_grains_are_stored_and_others_compressed() {
        let mut z = Compressors::new();
        let mut x = 0x9E3779B97F4A7C15u64;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let stored = grain_record(&mut z, 3, &noise).unwrap().unwrap();
        // Stored: 12 bytes of record header, two stored deflate blocks, zlib framing.
        assert_eq!(stored.len(), 129 * 512);
        let text = b"talos ".repeat(65536 / 6 + 1)[..65536].to_vec();
        let packed = grain_record(&mut z, 4, &text).unwrap().unwrap();
        assert!(packed.len() <= 2 * 512, "{}", packed.len());
        for (record, data) in [(&stored, &noise), (&packed, &text)] {
            let len = u32::from_le_bytes(record[8..12].try_into().unwrap()) as usize;
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&record[12..12 + len])
                .read_to_end(&mut back)
                .unwrap();
            assert!(&back == data);
        }
        assert_eq!(grain_record(&mut z, 5, &[0u8; 65536]).unwrap(), None);
    }

    #[test]
    fn descriptor_ids_come_from_the_digest() {
        let a = descriptor(16_777_216, &[1u8; 32]);
        assert_eq!(a, descriptor(16_777_216, &[1u8; 32]));
        assert_ne!(a, descriptor(16_777_216, &[2u8; 32]));
        assert!(a.contains("CID=01010101\n"), "{a}");
        assert!(a.contains("ddb.longContentID = \"01010101010101010101010101010101\""));
        assert!(a.contains("ddb.geometry.cylinders = \"1045\""), "{a}");
        // Never the reserved CIDs.
        let b = descriptor(1, &[0xff; 32]);
        assert!(b.contains("CID=7fffffff\n"), "{b}");
    }
}
