//! One file made of independently decodable chunks of one compression format — zstd
//! frames ([`crate::formats::zstd_frames`]) or xz streams
//! ([`crate::formats::xz_streams`]) — each either compressed by the format's library or
//! *stored* (the format's uncompressed blocks), each holding exactly the bytes it was
//! begun with.
//!
//! Decoders of both formats read such a file as the concatenation of the chunks'
//! contents (`zstd -dc`, `xz -dc`), and the Linux initramfs unpacker decompresses one
//! chunk per call and goes on with the next. So bytes that are compressed already
//! (squashfs images) cost a copy, while the rest still gets the format's compression.
//! This module holds what both formats share: the sequence of chunks and the exact
//! size each must receive; a [`Codec`] supplies the two kinds of chunk.

use std::io::{self, Write};

/// How the next chunk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// By the format's library, with its content check.
    Compressed,
    /// As the format's uncompressed blocks, with its content check.
    Stored,
}

/// A compression format whose chunks concatenate.
pub trait Codec {
    /// What a chunk is called in errors ("zstd frame").
    const CHUNK: &'static str;
    /// The library's encoder of one compressed chunk.
    type Encoder<W: Write>: Write;
    /// The writer of one stored chunk.
    type Stored<W: Write>: StoredChunk<W>;

    /// Begins a compressed chunk of exactly `size` bytes.
    fn encoder<W: Write>(&self, out: W, size: u64) -> io::Result<Self::Encoder<W>>;
    /// Ends a compressed chunk; returns the output.
    fn finish<W: Write>(enc: Self::Encoder<W>) -> io::Result<W>;
    /// Begins a stored chunk of exactly `size` bytes.
    fn stored<W: Write>(out: W, size: u64) -> io::Result<Self::Stored<W>>;
}

/// One stored chunk being written; it refuses bytes past its size.
pub trait StoredChunk<W: Write>: Sized {
    /// Takes some of `buf`, as [`Write::write`].
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Ends the chunk (which must have received all its bytes); returns the output.
    fn finish(self) -> io::Result<W>;
    /// The output, for flushing.
    fn out(&mut self) -> &mut W;
}

enum Current<W: Write, C: Codec> {
    None(W),
    Compressed { enc: C::Encoder<W>, left: u64 },
    Stored(C::Stored<W>),
}

/// Writes chunks one after another into `W`; [`ChunkWriter::begin`] starts each.
pub struct ChunkWriter<W: Write, C: Codec> {
    current: Option<Current<W, C>>,
    codec: C,
}

impl<W: Write, C: Codec> ChunkWriter<W, C> {
    /// A writer of `codec`'s chunks into `out`.
    pub fn new(out: W, codec: C) -> Self {
        ChunkWriter {
            current: Some(Current::None(out)),
            codec,
        }
    }

    /// Ends the current chunk, if any, and begins one that holds exactly `size` bytes.
    pub fn begin(&mut self, chunk: Chunk, size: u64) -> io::Result<()> {
        let out = self.end()?;
        let next = match chunk {
            Chunk::Compressed => Current::Compressed {
                enc: self.codec.encoder(out, size)?,
                left: size,
            },
            Chunk::Stored => Current::Stored(C::stored(out, size)?),
        };
        self.current = Some(next);
        Ok(())
    }

    /// Ends the current chunk (which must have received all its bytes).
    fn end(&mut self) -> io::Result<W> {
        match self.current.take().expect("a chunk state") {
            Current::None(out) => Ok(out),
            Current::Compressed { enc, left } => {
                if left != 0 {
                    return Err(short(C::CHUNK, left));
                }
                C::finish(enc)
            }
            Current::Stored(s) => s.finish(),
        }
    }

    /// Ends the last chunk; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let mut out = self.end()?;
        out.flush()?;
        Ok(out)
    }
}

/// A chunk ended before it received the `left` bytes it was begun with.
pub fn short(chunk: &str, left: u64) -> io::Error {
    io::Error::other(format!(
        "{chunk}: {left} bytes fewer than the {chunk} was begun with"
    ))
}

/// A chunk was given more bytes than it was begun with.
pub fn overflow(chunk: &str) -> io::Error {
    io::Error::other(format!(
        "{chunk}: more bytes than the {chunk} was begun with"
    ))
}

impl<W: Write, C: Codec> Write for ChunkWriter<W, C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.current.as_mut().expect("a chunk state") {
            Current::None(_) => Err(io::Error::other(format!(
                "{}: bytes before any {}",
                C::CHUNK,
                C::CHUNK
            ))),
            Current::Compressed { enc, left } => {
                let take = (buf.len() as u64).min(*left) as usize;
                if take == 0 {
                    return Err(overflow(C::CHUNK));
                }
                let n = enc.write(&buf[..take])?;
                *left -= n as u64;
                Ok(n)
            }
            Current::Stored(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // A compressed chunk is flushed when it ends: flushing the library mid-chunk
        // would end a block early and change the bytes.
        match self.current.as_mut().expect("a chunk state") {
            Current::None(out) => out.flush(),
            Current::Compressed { .. } => Ok(()),
            Current::Stored(s) => s.out().flush(),
        }
    }
}
