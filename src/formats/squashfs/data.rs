//! The data pass of the squashfs writer: every regular file's bytes placed after the
//! superblock, in the order mksquashfs 4.5.1 places them (`mksquashfs.c`: `write_file`,
//! `get_and_fill_fragment`, `duplicate`, `frag_duplicate`; `process_fragments.c`).
//!
//! A file shorter than a block goes whole into the open fragment, which is stored when
//! the next one does not fit; a fragment-sized file equal to an earlier one shares its
//! place. An all-zero file shorter than a block is stored as one sparse block instead
//! (as mksquashfs's fragment thread turns it). A longer file is stored in blocks, its
//! last block short; an all-zero block is not stored (size 0 in the block list). A file
//! whose stored blocks equal an earlier file's (same block list, same stored bytes,
//! compared by SHA-256) points at those and its own are dropped.
//!
//! The main thread reads the files and hands out sequence-numbered jobs; a pool of
//! threads compresses them; one thread writes the results in sequence. So the bytes do
//! not depend on the thread count, and at most a fixed number of blocks is in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::meta::{BLOCK_UNCOMPRESSED, Codec, Compressor};
use super::writer::{INVALID_FRAG, Kind, Tree};
use crate::error::{Error, IoContext, Result};
use crate::report::Bar;

/// Where a file's data went.
#[derive(Clone)]
pub struct FileData {
    pub size: u64,
    pub start: u64,
    pub blocks: Arc<Vec<u32>>,
    /// (fragment index, offset in it), or `INVALID_FRAG`.
    pub fragment: (u32, u32),
    /// Bytes in all-zero blocks, 0 when the file is not sparse on disk.
    pub sparse: u64,
}

enum Job {
    Block {
        file: usize,
        index: u32,
        data: Vec<u8>,
        last: bool,
        zero: Option<bool>,
    },
    Fragment {
        index: u32,
        data: Vec<u8>,
    },
}

enum Stored {
    /// An all-zero block, not stored.
    Sparse(usize),
    Raw(Vec<u8>),
    Compressed(Vec<u8>),
}

impl Stored {
    fn size_field(&self) -> u32 {
        match self {
            Stored::Sparse(_) => 0,
            Stored::Raw(d) => d.len() as u32 | BLOCK_UNCOMPRESSED,
            Stored::Compressed(d) => d.len() as u32,
        }
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Stored::Sparse(_) => &[],
            Stored::Raw(d) | Stored::Compressed(d) => d,
        }
    }
}

enum Done {
    Block {
        file: usize,
        index: u32,
        last: bool,
        zero: Option<bool>,
        stored: Stored,
    },
    Fragment {
        index: u32,
        stored: Stored,
    },
}

fn compress_job(c: &mut Compressor, job: Job, block_size: u32) -> Result<Done> {
    let store = |c: &mut Compressor, data: Vec<u8>| -> Result<Stored> {
        Ok(match c.compress(&data, block_size as usize, block_size)? {
            Some(z) => Stored::Compressed(z),
            None => Stored::Raw(data),
        })
    };
    Ok(match job {
        Job::Block {
            file,
            index,
            data,
            last,
            zero,
        } => {
            let stored = if data.iter().all(|&b| b == 0) {
                Stored::Sparse(data.len())
            } else {
                store(c, data)?
            };
            Done::Block {
                file,
                index,
                last,
                zero,
                stored,
            }
        }
        Job::Fragment { index, data } => Done::Fragment {
            index,
            stored: store(c, data)?,
        },
    })
}

/// The output file and what the writer thread learnt while placing data.
pub struct Placed {
    pub out: File,
    pub pos: u64,
    pub files: HashMap<usize, FileData>,
    pub fragments: Vec<(u64, u32)>,
}

/// A block file being placed.
struct Open {
    start: u64,
    blocks: Vec<u32>,
    hash: Sha256,
    sparse: u64,
}

struct Placer<'t> {
    tree: &'t Tree,
    out: std::io::BufWriter<File>,
    pos: u64,
    open: Option<Open>,
    /// Stored block files by (block list, SHA-256 of the stored bytes).
    seen: HashMap<(Arc<Vec<u32>>, [u8; 32]), FileData>,
    /// All-zero files shorter than a block, in order.
    zeros: Vec<FileData>,
    files: HashMap<usize, FileData>,
    fragments: Vec<(u64, u32)>,
}

impl Placer<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).writing(&self.tree.dest)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn place(&mut self, done: Done) -> Result<()> {
        match done {
            Done::Fragment { index, stored } => {
                debug_assert_eq!(index as usize, self.fragments.len());
                self.fragments.push((self.pos, stored.size_field()));
                self.write(stored.bytes())?;
            }
            Done::Block {
                file,
                index,
                last,
                zero,
                stored,
            } => {
                if index == 0 {
                    self.open = Some(Open {
                        start: self.pos,
                        blocks: Vec::new(),
                        hash: Sha256::new(),
                        sparse: 0,
                    });
                }
                let mut open = self.open.take().expect("a file's blocks in order");
                open.blocks.push(stored.size_field());
                if let Stored::Sparse(n) = stored {
                    open.sparse += n as u64;
                }
                open.hash.update(stored.bytes());
                self.write(stored.bytes())?;
                if let Some(dup_path) = zero {
                    self.close_zero(file, open, dup_path);
                } else if last {
                    self.close(file, open)?;
                } else {
                    self.open = Some(open);
                }
            }
        }
        Ok(())
    }

    /// An all-zero file shorter than a block is complete. mksquashfs stores it as one
    /// sparse block rather than a fragment, and compares it only with earlier such
    /// files, and only when a fragment-only file of its size exists (`dup_path`).
    fn close_zero(&mut self, file: usize, open: Open, dup_path: bool) {
        let Kind::File { size, allocated } = self.tree.nodes[file].kind else {
            unreachable!("blocks of a regular file")
        };
        let sparse = if allocated >= size { 0 } else { size };
        let data = match self.zeros.last() {
            Some(earlier) if dup_path => {
                if earlier.size == size {
                    earlier.clone()
                } else {
                    FileData {
                        size,
                        sparse,
                        ..earlier.clone()
                    }
                }
            }
            _ => {
                let data = FileData {
                    size,
                    start: open.start,
                    blocks: Arc::new(open.blocks),
                    fragment: (INVALID_FRAG, 0),
                    sparse,
                };
                self.zeros.push(data.clone());
                data
            }
        };
        self.files.insert(file, data);
    }

    /// A block file is complete: keep it, or point it at an equal earlier one.
    fn close(&mut self, file: usize, open: Open) -> Result<()> {
        let Kind::File { size, allocated } = self.tree.nodes[file].kind else {
            unreachable!("blocks of a regular file")
        };
        // A file with all-zero blocks that is not sparse on disk is reported as not
        // sparse (mksquashfs: st_blocks covers its size).
        let sparse = if open.sparse > 0 && allocated >= size {
            0
        } else {
            open.sparse
        };
        let key = (Arc::new(open.blocks), open.hash.finalize().into());
        let data = match self.seen.get(&key) {
            Some(earlier) => {
                // Drop the blocks just written; the next data overwrites them.
                self.out.flush().writing(&self.tree.dest)?;
                self.out
                    .seek(SeekFrom::Start(open.start))
                    .writing(&self.tree.dest)?;
                self.pos = open.start;
                if earlier.size == size {
                    earlier.clone()
                } else {
                    FileData {
                        size,
                        sparse,
                        ..earlier.clone()
                    }
                }
            }
            None => {
                let data = FileData {
                    size,
                    start: open.start,
                    blocks: key.0.clone(),
                    fragment: (INVALID_FRAG, 0),
                    sparse,
                };
                self.seen.insert(key, data.clone());
                data
            }
        };
        self.files.insert(file, data);
        Ok(())
    }
}

/// Reads every regular file of the tree and places its data: blocks compressed on
/// `threads` threads, written in order at `start`.
pub fn place_data(
    tree: &Tree,
    out: File,
    start: u64,
    codec: Codec,
    block_size: u32,
    threads: usize,
    bar: &Bar,
) -> Result<(Placed, HashMap<usize, FileData>)> {
    let threads = threads.max(1);
    let in_flight = 4 * threads + 2;
    let (job_tx, job_rx) = sync_channel::<(u64, Job)>(in_flight);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = channel::<(u64, Result<Done>)>();
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        token_tx.send(()).expect("room for every token");
    }
    let mut files = Vec::new();
    tree.files_in_order(0, &mut files);

    std::thread::scope(|s| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            s.spawn(move || {
                let mut c = match Compressor::new(codec) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = done_tx.send((u64::MAX, Err(e)));
                        return;
                    }
                };
                loop {
                    let next = job_rx.lock().expect("job queue").recv();
                    let Ok((seq, job)) = next else { return };
                    if done_tx
                        .send((seq, compress_job(&mut c, job, block_size)))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let placer = s.spawn(move || place_in_order(tree, out, start, done_rx, token_tx));
        let produced = produce(tree, &files, block_size, bar, &job_tx, &token_rx);
        drop(job_tx);
        let placed = placer.join().expect("the squashfs writer thread");
        // The writer's error explains a producer stopped by it.
        let placed = placed?;
        Ok((placed, produced?))
    })
}

fn place_in_order(
    tree: &Tree,
    out: File,
    start: u64,
    done_rx: Receiver<(u64, Result<Done>)>,
    token_tx: SyncSender<()>,
) -> Result<Placed> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    out.seek(SeekFrom::Start(start)).writing(&tree.dest)?;
    let mut p = Placer {
        tree,
        out,
        pos: start,
        open: None,
        seen: HashMap::new(),
        zeros: Vec::new(),
        files: HashMap::new(),
        fragments: Vec::new(),
    };
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for (seq, done) in done_rx {
        waiting.insert(seq, done?);
        while let Some(done) = waiting.remove(&next) {
            p.place(done)?;
            next += 1;
            let _ = token_tx.send(());
        }
    }
    p.out.flush().writing(&tree.dest)?;
    let out = p
        .out
        .into_inner()
        .map_err(|e| e.into_error())
        .writing(&tree.dest)?;
    Ok(Placed {
        out,
        pos: p.pos,
        files: p.files,
        fragments: p.fragments,
    })
}

/// Reads the files in order and hands out jobs; fragment-sized files are packed
/// here. Returns the data of the files that have no blocks.
fn produce(
    tree: &Tree,
    files: &[usize],
    block_size: u32,
    bar: &Bar,
    jobs: &SyncSender<(u64, Job)>,
    tokens: &Receiver<()>,
) -> Result<HashMap<usize, FileData>> {
    let bs = block_size as usize;
    let mut seq = 0u64;
    let stopped = || Error::invalid("squashfs: the writer stopped");
    let mut send = |job: Job| -> Result<()> {
        tokens.recv().map_err(|_| stopped())?;
        jobs.send((seq, job)).map_err(|_| stopped())?;
        seq += 1;
        Ok(())
    };
    let mut small = HashMap::new();
    let mut frag_seen: HashMap<(usize, [u8; 32]), (u32, u32)> = HashMap::new();
    let mut frag_sizes = HashSet::new();
    let mut frag: Vec<u8> = Vec::new();
    let mut frag_index = 0u32;
    let mut frag_open = false;
    for &f in files {
        let node = &tree.nodes[f];
        let Kind::File { size, .. } = node.kind else {
            continue;
        };
        let path = tree.root.join(&node.rel);
        if size == 0 {
            small.insert(
                f,
                FileData {
                    size: 0,
                    start: 0,
                    blocks: Arc::new(Vec::new()),
                    fragment: (INVALID_FRAG, 0),
                    sparse: 0,
                },
            );
            continue;
        }
        let mut file = File::open(&path).op("opening", &path)?;
        let changed = || Error::format(&path, "changed size while being read");
        if size < block_size as u64 {
            let mut data = vec![0u8; size as usize];
            file.read_exact(&mut data).map_err(|_| changed())?;
            bar.inc(size);
            if data.iter().all(|&b| b == 0) {
                let dup_path = frag_sizes.contains(&data.len());
                send(Job::Block {
                    file: f,
                    index: 0,
                    data,
                    last: true,
                    zero: Some(dup_path),
                })?;
                continue;
            }
            let key = (data.len(), Sha256::digest(&data).into());
            let fragment = match frag_seen.get(&key) {
                Some(&at) => at,
                None => {
                    if frag_open && frag.len() + data.len() > bs {
                        send(Job::Fragment {
                            index: frag_index,
                            data: std::mem::take(&mut frag),
                        })?;
                        frag_index += 1;
                    }
                    frag_open = true;
                    let at = (frag_index, frag.len() as u32);
                    frag.extend_from_slice(&data);
                    frag_seen.insert(key, at);
                    frag_sizes.insert(data.len());
                    at
                }
            };
            small.insert(
                f,
                FileData {
                    size,
                    start: 0,
                    blocks: Arc::new(Vec::new()),
                    fragment,
                    sparse: 0,
                },
            );
            continue;
        }
        let count = size.div_ceil(block_size as u64);
        for index in 0..count {
            let len = if index + 1 == count {
                (size - index * block_size as u64) as usize
            } else {
                bs
            };
            let mut data = vec![0u8; len];
            file.read_exact(&mut data).map_err(|_| changed())?;
            bar.inc(len as u64);
            let last = index + 1 == count;
            send(Job::Block {
                file: f,
                index: index as u32,
                data,
                last,
                zero: None,
            })?;
        }
    }
    if frag_open {
        send(Job::Fragment {
            index: frag_index,
            data: frag,
        })?;
    }
    Ok(small)
}
