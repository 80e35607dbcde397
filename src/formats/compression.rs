//! outFormat post-processing: streaming compression of a finished artifact.
//!
//! The artifact is read once through [`SparseReader`] (a disk image's holes cost no
//! I/O) straight into the compressor. Outputs are reproducible: no timestamps or
//! names in headers, fixed block sizes for the multi-threaded codecs.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::io::sparse::SparseReader;
use crate::profile::OutFormat;

/// xz preset: Talos uses `xz -0`: fast, and disk images are mostly zeros.
const XZ_PRESET: u32 = 0;
/// xz block size for multi-threaded compression; fixed so output does not depend on the
/// number of cores.
const XZ_BLOCK_SIZE: u64 = 8 << 20;
/// zstd level. Talos uses `-18`, which runs at a few MB/s on kernel and initramfs bytes;
/// level 3 keeps pace with the disk on one core with a few MiB of memory (multi-threaded
/// zstd needs ~100 MiB of job buffers for little gain here).
const ZSTD_LEVEL: i32 = 3;
/// gzip level, as Talos's `pigz -6`.
const GZIP_LEVEL: u32 = 6;

/// Compresses `src` into `dest`, the file at `dest_name`, in `format`; `.tar.gz`
/// entries are stamped `epoch`.
pub fn compress(
    src: &Path,
    format: OutFormat,
    dest: &mut impl Write,
    dest_name: &Path,
    epoch: u64,
) -> Result<()> {
    let file = File::open(src).at(src)?;
    let mut input = SparseReader::new(file).at(src)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    match format {
        OutFormat::Xz => {
            let stream = xz2::stream::MtStreamBuilder::new()
                .threads(threads)
                .block_size(XZ_BLOCK_SIZE)
                .preset(XZ_PRESET)
                .check(xz2::stream::Check::Crc64)
                .encoder()
                .map_err(|e| Error::io(dest_name, io::Error::other(e)))?;
            let mut enc = xz2::write::XzEncoder::new_stream(dest, stream);
            pump(&mut input, src, &mut enc, dest_name)?;
            enc.finish().at(dest_name)?;
        }
        OutFormat::Zst => {
            let mut enc = zstd::stream::write::Encoder::new(dest, ZSTD_LEVEL).at(dest_name)?;
            enc.include_checksum(true).at(dest_name)?;
            pump(&mut input, src, &mut enc, dest_name)?;
            enc.finish().at(dest_name)?;
        }
        OutFormat::Gz => {
            let mut enc = gzip(dest);
            pump(&mut input, src, &mut enc, dest_name)?;
            enc.finish().at(dest_name)?;
        }
        OutFormat::TarGz => {
            // GCE import format: one member `disk.raw`.
            let len = input.len();
            let mut tar = tar::Builder::new(gzip(dest));
            let mut header = crate::io::tar::file_header(len, 0o644, epoch);
            tar.append_data(&mut header, "disk.raw", &mut input)
                .at(src)?;
            tar.into_inner().at(dest_name)?.finish().at(dest_name)?;
        }
        OutFormat::Raw => {
            pump(&mut input, src, dest, dest_name)?;
        }
    }
    Ok(())
}

fn gzip<W: Write>(w: W) -> crate::io::pgzip::ParallelGzEncoder<W> {
    crate::io::pgzip::ParallelGzEncoder::new(w, GZIP_LEVEL)
}

fn pump(input: &mut impl Read, src: &Path, out: &mut impl Write, dest_name: &Path) -> Result<()> {
    crate::io::copy(input, src, out, dest_name).map(|_| ())
}
