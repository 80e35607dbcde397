//! depmod: the `modules.*` index files of a kernel module tree, byte for byte as
//! kmod 34.2's `depmod -a -C <conf>` writes them (the depmod the Talos imager runs
//! on the merged module tree of the system extensions).
//!
//! Why here: the product runs no external tools, and no crate generates these files.
//! What is reproduced, and from where (kmod `tools/depmod.c`, `shared/hash.c`,
//! `libkmod/libkmod-elf.c` at v34.2; the `.bin` layout is in [`index`], the ELF
//! reading in [`elf`]):
//! - **Which modules.** Every `*.ko`, `*.ko.xz` and `*.ko.zst` under the directory
//!   (`build` and `source` skipped, symlinks followed), named by their file name up to
//!   the first `.` with `-` turned into `_`. Same-named modules are resolved by the
//!   configuration's `search` list ([`Config`]); Talos's is `search extras built-in`,
//!   so a module under `extras/` shadows an in-tree one of the same name. Directories
//!   are walked in byte order of their entries (kmod walks in `readdir` order, which
//!   only matters for two same-named modules of the same search priority).
//! - **Module order.** kmod lists the modules in the iteration order of its 512-bucket
//!   name hash (Paul Hsieh's "superfast" hash, entries of a bucket sorted by name),
//!   then moves those named in `modules.order` to the front, in that file's order (a
//!   file whose last line lacks its newline is ignored, as kmod ignores it). Modules
//!   missing from `modules.order` (an extension's `extras/` usually are) follow the
//!   listed ones **in that hash order**: kmod's sort then leaves them where its
//!   hash put them with glibc's stable `qsort` (Debian), while musl's (the Talos
//!   imager) may permute them, so this is the defined order: kmod's on glibc.
//! - **Dependencies.** A module depends on the modules exporting the symbols it
//!   needs (the last one in module order wins a symbol exported twice); weak
//!   references count too; unknown symbols are ignored. The graph is sorted
//!   topologically as kmod does (a stack of modules nobody needs, in module order),
//!   and each `modules.dep` line lists all transitive dependencies in that order. A
//!   cycle is an error (kmod writes nothing then either).
//! - **Files**, in this order: `modules.dep`, `.dep.bin`, `.alias`, `.alias.bin`,
//!   `.softdep`, `.weakdep`, `.symbols` (in the order of kmod's 2048-bucket symbol
//!   hash), `.symbols.bin`, `.builtin.bin` (from `modules.builtin`; empty when that
//!   file is missing), `.builtin.alias.bin` (the `alias` entries of
//!   `modules.builtin.modinfo`; empty when missing) and `.devname`. All 0644.
//!
//! Stricter than kmod: a module file that is not a readable ELF object, a cycle, or a
//! non-ASCII index key is an error naming the file (kmod warns, skips or, for the
//! last, misbehaves); compressed modules are read (`.ko.xz`, `.ko.zst`; Talos
//! kernels ship them uncompressed).

pub mod elf;
pub mod index;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use index::Index;

/// The files depmod writes, in its order.
pub const OUTPUTS: [&str; 11] = [
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.weakdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];

/// Module file name endings depmod recognises (those of Debian's kmod build).
const EXTENSIONS: [&str; 3] = [".ko", ".ko.xz", ".ko.zst"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Search {
    /// `built-in`: the modules of the tree in no searched directory.
    BuiltIn,
    /// A directory relative to the module directory.
    Path(Vec<u8>),
}

/// depmod's configuration: the `search` priority list.
#[derive(Debug, Clone)]
pub struct Config {
    /// In kmod's internal order (each `search` word is pushed in front), so a later
    /// index means a higher priority.
    searches: Vec<Search>,
}

impl Config {
    /// From the words of `search` lines, as written in a `depmod.d` file.
    pub fn search(words: &[&str]) -> Self {
        let mut searches: Vec<Search> = words
            .iter()
            .map(|w| match *w {
                "built-in" => Search::BuiltIn,
                p => Search::Path(p.as_bytes().to_vec()),
            })
            .collect();
        searches.reverse();
        if searches.is_empty() {
            searches.push(Search::Path(b"updates".to_vec()));
        }
        Config { searches }
    }

    /// Talos's `/etc/modules.d/10-extra-modules.conf`: `search extras built-in`.
    pub fn talos() -> Self {
        Config::search(&["extras", "built-in"])
    }

    /// Whether the module already kept at `old` (path relative to the module
    /// directory) wins over a same-named one at `new` (kmod's
    /// `depmod_module_is_higher_priority`, quirks included).
    fn keeps_old(&self, old: &[u8], new: &[u8]) -> bool {
        let under = |rel: &[u8], p: &[u8]| {
            rel.len() > p.len() && rel[p.len()] == b'/' && rel.starts_with(p)
        };
        let (mut builtin, mut oldp, mut newp) = (-1i64, -1i64, -1i64);
        for (i, s) in self.searches.iter().enumerate() {
            let i = i as i64;
            match s {
                Search::BuiltIn => builtin = i,
                Search::Path(p) if under(new, p) => newp = i,
                Search::Path(p) if under(old, p) => oldp = i,
                Search::Path(_) => {}
            }
        }
        if newp < 0 {
            newp = builtin;
        }
        if oldp < 0 {
            oldp = builtin;
        }
        newp <= oldp
    }
}

/// kmod's `hash_superfast` (Paul Hsieh), bytes read as signed `char` like kmod on x86.
fn superfast(key: &[u8]) -> u32 {
    let sc = |b: u8| b as i8 as i32 as u32;
    let u16le = |k: &[u8]| u32::from(u16::from_le_bytes([k[0], k[1]]));
    let len = key.len() as u32;
    let mut hash = len;
    let rem = key.len() & 3;
    let mut k = key;
    for _ in 0..key.len() / 4 {
        hash = hash.wrapping_add(u16le(k));
        let tmp = (u16le(&k[2..]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        k = &k[4..];
        hash = hash.wrapping_add(hash >> 11);
    }
    match rem {
        3 => {
            hash = hash.wrapping_add(u16le(k));
            hash ^= hash << 16;
            hash ^= sc(k[2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(u16le(k));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            hash = hash.wrapping_add(sc(k[0]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// Sorts `keys` into the iteration order of a kmod hash table of `buckets` buckets.
fn hash_order<T>(items: &mut [T], buckets: u32, key: impl Fn(&T) -> &[u8]) {
    items.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        (superfast(ka) & (buckets - 1), ka).cmp(&(superfast(kb) & (buckets - 1), kb))
    });
}

/// kmod's `modname_normalize`: up to the first `.`, `-` as `_`.
fn modname(file_name: &[u8]) -> Vec<u8> {
    file_name
        .iter()
        .take_while(|&&c| c != b'.')
        .map(|&c| if c == b'-' { b'_' } else { c })
        .collect()
}

/// kmod's `alias_normalize`: `-` as `_` outside `[...]`; `None` for unbalanced brackets.
fn alias_normalize(alias: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(alias.len());
    let mut i = 0;
    while i < alias.len() {
        match alias[i] {
            b'-' => out.push(b'_'),
            b']' => return None,
            b'[' => {
                while i < alias.len() && alias[i] != b']' {
                    out.push(alias[i]);
                    i += 1;
                }
                if i == alias.len() {
                    return None;
                }
                out.push(b']');
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

struct Module {
    path: PathBuf,
    /// Path relative to the module directory.
    rel: Vec<u8>,
    /// `rel` cut to `<dir>/<name>.ko` length (kmod's `uncrelpath`, matched against
    /// `modules.order`).
    uncrel: Vec<u8>,
    name: Vec<u8>,
    info: elf::ModuleInfo,
    deps: Vec<usize>,
    users: u32,
    dep_sort: usize,
}

/// Collects the modules under `dir` into `found` (name -> module), resolving names.
fn search(
    dir: &Path,
    sub: &Path,
    rel: &[u8],
    config: &Config,
    found: &mut HashMap<Vec<u8>, Module>,
) -> Result<()> {
    let here = dir.join(sub);
    let mut names: Vec<_> = std::fs::read_dir(&here)
        .at(&here)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .at(&here)?;
    names.sort();
    for n in names {
        let nb = n.as_bytes();
        if nb == b"build" || nb == b"source" {
            continue;
        }
        let path = here.join(&n);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling link: kmod reports it and goes on
        };
        let mut r = rel.to_vec();
        r.extend_from_slice(nb);
        if meta.is_dir() {
            r.push(b'/');
            search(dir, &sub.join(&n), &r, config, found)?;
            continue;
        }
        if !meta.is_file()
            || !EXTENSIONS
                .iter()
                .any(|e| nb.len() > e.len() && nb.ends_with(e.as_bytes()))
        {
            continue;
        }
        let name = modname(nb);
        if let Some(old) = found.get(&name)
            && config.keeps_old(&old.rel, &r)
        {
            continue;
        }
        let dirlen = rel.len();
        let uncrel_len = (dirlen + name.len() + ".ko".len()).min(r.len());
        found.insert(
            name.clone(),
            Module {
                path,
                uncrel: r[..uncrel_len].to_vec(),
                rel: r,
                name,
                info: elf::ModuleInfo::default(),
                deps: Vec::new(),
                users: 0,
                dep_sort: usize::MAX,
            },
        );
    }
    Ok(())
}

/// Reads a module file, decompressing `.ko.xz` / `.ko.zst`.
fn load(path: &Path) -> Result<elf::ModuleInfo> {
    let mut raw = Vec::new();
    File::open(path)
        .at(path)?
        .read_to_end(&mut raw)
        .reading(path)?;
    let name = path.as_os_str().as_bytes();
    let data = if name.ends_with(b".xz") {
        let mut d = Vec::new();
        xz2::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut d)
            .map_err(|e| Error::format(path, format!("kernel module: xz: {e}")))?;
        d
    } else if name.ends_with(b".zst") {
        zstd::stream::decode_all(&raw[..])
            .map_err(|e| Error::format(path, format!("kernel module: zstd: {e}")))?
    } else {
        raw
    };
    elf::read(&data).map_err(|e| Error::format(path, format!("kernel module: {e}")))
}

/// Reads every module on all cores, in place.
fn load_all(mods: &mut [Module]) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let chunk = mods.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = mods
            .chunks_mut(chunk)
            .map(|part| {
                s.spawn(move || -> Result<()> {
                    for m in part {
                        m.info = load(&m.path)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("a module reader panicked"))
    })
}

/// Applies `modules.order` (kmod's `depmod_modules_sort`).
fn apply_order(dir: &Path, mods: &mut Vec<Module>) -> Result<()> {
    let path = dir.join("modules.order");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io_op("reading", &path, e)),
    };
    let by_uncrel: HashMap<&[u8], usize> = mods
        .iter()
        .enumerate()
        .map(|(i, m)| (m.uncrel.as_slice(), i))
        .collect();
    let mut key: Vec<i64> = vec![1; mods.len()];
    let mut next = -(mods.len() as i64);
    for line in text.split_inclusive(|&b| b == b'\n') {
        // kmod reads lines of at most PATH_MAX - 1 bytes; a cut or unterminated line
        // makes it give up on the order.
        // A NUL ends the line for kmod (`strlen`): an empty one is skipped, any other
        // lacks its newline.
        if line[0] == 0 {
            continue;
        }
        let Some(l) = line
            .strip_suffix(b"\n")
            .filter(|l| line.len() < 4096 && !l.contains(&0))
        else {
            return Ok(());
        };
        if let Some(&i) = by_uncrel.get(l)
            && key[i] >= 0
        {
            key[i] = next;
            next += 1;
        }
    }
    let mut order: Vec<usize> = (0..mods.len()).collect();
    order.sort_by_key(|&i| key[i]); // stable, like glibc's merge sort
    let mut slots: Vec<Option<Module>> = std::mem::take(mods).into_iter().map(Some).collect();
    *mods = order
        .into_iter()
        .map(|i| slots[i].take().expect("each once"))
        .collect();
    Ok(())
}

/// Resolves symbols, builds the dependency lists and sorts them topologically.
fn resolve(mods: &mut [Module]) -> Result<HashMap<Vec<u8>, usize>> {
    let mut owner: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, m) in mods.iter().enumerate() {
        for s in &m.info.exports {
            owner.insert(s.clone(), i);
        }
    }
    for i in 0..mods.len() {
        let mut deps: Vec<usize> = Vec::new();
        if let Some(needs) = &mods[i].info.needs {
            for n in needs {
                let n = n.strip_prefix(b".").unwrap_or(n);
                if let Some(&o) = owner.get(n)
                    && !deps.contains(&o)
                {
                    deps.push(o);
                }
            }
        }
        for &o in &deps {
            mods[o].users += 1;
        }
        mods[i].deps = deps;
    }
    // Topological order: modules nobody uses first, a stack seeded in module order.
    let mut users: Vec<u32> = mods.iter().map(|m| m.users).collect();
    let mut stack: Vec<usize> = (0..mods.len()).filter(|&i| users[i] == 0).collect();
    let mut sorted = 0;
    while let Some(src) = stack.pop() {
        mods[src].dep_sort = sorted;
        sorted += 1;
        for k in 0..mods[src].deps.len() {
            let d = mods[src].deps[k];
            users[d] -= 1;
            if users[d] == 0 {
                stack.push(d);
            }
        }
    }
    if sorted < mods.len() {
        let mut cyclic: Vec<String> = mods
            .iter()
            .zip(&users)
            .filter(|(_, u)| **u > 0)
            .map(|(m, _)| String::from_utf8_lossy(&m.name).into_owned())
            .collect();
        cyclic.sort();
        return Err(Error::invalid(format!(
            "kernel modules depend on each other in a cycle: {}",
            cyclic.join(", ")
        )));
    }
    Ok(owner)
}

/// All dependencies of `m`, transitively, in topological order.
fn all_deps(mods: &[Module], m: usize) -> Vec<usize> {
    let mut seen = vec![false; mods.len()];
    let mut out = Vec::new();
    let mut todo: Vec<usize> = mods[m].deps.iter().rev().copied().collect();
    while let Some(d) = todo.pop() {
        if std::mem::replace(&mut seen[d], true) {
            continue;
        }
        out.push(d);
        todo.extend(mods[d].deps.iter().rev());
    }
    out.sort_by_key(|&d| mods[d].dep_sort);
    out
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub modules: usize,
    pub symbols: usize,
}

/// Writes the depmod files of the module directory `dir` (`.../<kver>`) into `out`.
pub fn run(dir: &Path, out: &Path, config: &Config) -> Result<Summary> {
    let mut found = HashMap::new();
    search(dir, Path::new(""), b"", config, &mut found)?;
    let mut mods: Vec<Module> = found.into_values().collect();
    if mods.len() >= usize::from(u16::MAX) {
        return Err(Error::invalid(format!(
            "{}: {} kernel modules, more than depmod's 65534",
            dir.display(),
            mods.len()
        )));
    }
    hash_order(&mut mods, 512, |m| &m.name);
    apply_order(dir, &mut mods)?;
    load_all(&mut mods)?;
    let owner = resolve(&mut mods)?;

    let mut symbols: Vec<(&[u8], usize)> = owner.iter().map(|(k, &v)| (k.as_slice(), v)).collect();
    hash_order(&mut symbols, 2048, |s| s.0);

    std::fs::create_dir_all(out).op("creating", out)?;
    let bad = |what: &str, e: index::BadChar| {
        Error::invalid(format!(
            "{}: {what} {:?} holds a byte kmod's indexes cannot store (only 7-bit ASCII)",
            dir.display(),
            String::from_utf8_lossy(&e.0)
        ))
    };

    // modules.dep and modules.dep.bin
    let mut dep = Vec::new();
    let mut dep_ix = Index::new();
    for (i, m) in mods.iter().enumerate() {
        let mut line = m.rel.clone();
        line.push(b':');
        for d in all_deps(&mods, i) {
            line.push(b' ');
            line.extend_from_slice(&mods[d].rel);
        }
        dep_ix
            .insert(&m.name, &line, i as u32)
            .map_err(|e| bad("module", e))?;
        line.push(b'\n');
        dep.extend_from_slice(&line);
    }
    emit(out, "modules.dep", |w| w.write_all(&dep))?;
    emit(out, "modules.dep.bin", |w| dep_ix.write(w))?;

    // modules.alias and modules.alias.bin
    let mut alias = b"# Aliases extracted from modules themselves.\n".to_vec();
    let mut alias_ix = Index::new();
    for (i, m) in mods.iter().enumerate() {
        for a in &m.info.aliases {
            for part in [&b"alias "[..], a, b" ", &m.name, b"\n"] {
                alias.extend_from_slice(part);
            }
            if let Some(n) = alias_normalize(a) {
                alias_ix
                    .insert(&n, &m.name, i as u32)
                    .map_err(|e| bad("alias", e))?;
            }
        }
    }
    emit(out, "modules.alias", |w| w.write_all(&alias))?;
    emit(out, "modules.alias.bin", |w| alias_ix.write(w))?;

    // modules.softdep, modules.weakdep
    for (file, header, word, pick) in [
        (
            "modules.softdep",
            &b"# Soft dependencies extracted from modules themselves.\n"[..],
            &b"softdep "[..],
            (|m: &Module| &m.info.softdeps) as fn(&Module) -> &Vec<Vec<u8>>,
        ),
        (
            "modules.weakdep",
            b"# Weak dependencies extracted from modules themselves.\n",
            b"weakdep ",
            |m: &Module| &m.info.weakdeps,
        ),
    ] {
        let mut text = header.to_vec();
        for m in &mods {
            for v in pick(m) {
                for part in [word, &m.name, b" ", v, b"\n"] {
                    text.extend_from_slice(part);
                }
            }
        }
        emit(out, file, |w| w.write_all(&text))?;
    }

    // modules.symbols and modules.symbols.bin
    let mut sym = b"# Aliases for symbols, used by symbol_request().\n".to_vec();
    let mut sym_ix = Index::new();
    for &(name, o) in &symbols {
        for part in [&b"alias symbol:"[..], name, b" ", &mods[o].name, b"\n"] {
            sym.extend_from_slice(part);
        }
        let mut key = b"symbol:".to_vec();
        key.extend_from_slice(name);
        sym_ix
            .insert(&key, &mods[o].name, o as u32)
            .map_err(|e| bad("symbol", e))?;
    }
    emit(out, "modules.symbols", |w| w.write_all(&sym))?;
    emit(out, "modules.symbols.bin", |w| sym_ix.write(w))?;

    // modules.builtin.bin, modules.builtin.alias.bin
    let builtin = read_optional(&dir.join("modules.builtin"))?;
    emit(out, "modules.builtin.bin", |w| match &builtin {
        None => Ok(()),
        Some(text) => {
            let mut ix = Index::new();
            for line in lines_like_fgets(text) {
                if !line.first().is_some_and(u8::is_ascii_alphabetic) {
                    continue; // kmod: "Invalid modules.builtin line"
                }
                let base = line.rsplit(|&b| b == b'/').next().unwrap_or(line);
                ix.insert(&modname(base), b"", 0).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("modules.builtin: {:?}", String::from_utf8_lossy(&e.0)),
                    )
                })?;
            }
            ix.write(w)
        }
    })?;
    let modinfo = read_optional(&dir.join("modules.builtin.modinfo"))?;
    emit(out, "modules.builtin.alias.bin", |w| match &modinfo {
        None => Ok(()),
        Some(data) => {
            let mut ix = Index::new();
            for (name, alias) in builtin_aliases(data) {
                if let Some(n) = alias_normalize(&alias) {
                    ix.insert(&n, &name, 0).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "modules.builtin.modinfo: {:?}",
                                String::from_utf8_lossy(&e.0)
                            ),
                        )
                    })?;
                }
            }
            ix.write(w)
        }
    })?;

    // modules.devname
    let mut devname = Vec::new();
    for m in &mods {
        if let Some((name, kind, major, minor)) = device(&m.info.aliases) {
            if devname.is_empty() {
                devname.extend_from_slice(b"# Device nodes to trigger on-demand module loading.\n");
            }
            devname.extend_from_slice(&m.name);
            devname.push(b' ');
            devname.extend_from_slice(name);
            devname.extend_from_slice(format!(" {kind}{major}:{minor}\n").as_bytes());
        }
    }
    emit(out, "modules.devname", |w| w.write_all(&devname))?;
    Ok(Summary {
        modules: mods.len(),
        symbols: symbols.len(),
    })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_op("reading", path, e)),
    }
}

/// Lines as `fgets` with a `PATH_MAX` buffer returns them (newline kept, cut at 4095).
fn lines_like_fgets(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|&b| b == b'\n')
        .flat_map(|l| l.chunks(4095))
}

/// The `(module, alias)` pairs of `modules.builtin.modinfo` (`name.key=value\0`
/// records), read the way kmod's `output_builtin_alias_bin` reads them.
fn builtin_aliases(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    // Reads up to `end` (or NUL or the end of data); the bytes if stopped by `end`.
    let take = |at: &mut usize, end: u8| -> Option<Vec<u8>> {
        let start = *at;
        while *at < data.len() && data[*at] != end && data[*at] != 0 {
            *at += 1;
        }
        let stopped = data.get(*at).copied();
        let bytes = data[start..*at].to_vec();
        if *at < data.len() {
            *at += 1;
        }
        (stopped == Some(end)).then_some(bytes)
    };
    while at < data.len() {
        let name = take(&mut at, b'.').unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let key = take(&mut at, b'=').unwrap_or_default();
        if key != b"alias" {
            take(&mut at, 0);
            continue;
        }
        let value = take(&mut at, 0).unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        out.push((name, value));
    }
    out
}

/// `sscanf(s, "<prefix>%u-%u")`: two unsigned numbers (leading blanks and a sign allowed).
fn scan_two(s: &[u8], prefix: &[u8]) -> Option<(u32, u32)> {
    fn num(s: &[u8]) -> Option<(u32, &[u8])> {
        let mut i = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let neg = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let v = s[i..i + digits].iter().fold(0u64, |v, &d| {
            v.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        let v = if v > u64::from(u32::MAX) {
            u32::MAX
        } else {
            v as u32
        };
        Some((if neg { v.wrapping_neg() } else { v }, &s[i + digits..]))
    }
    let (a, rest) = num(s.strip_prefix(prefix)?)?;
    let (b, _) = num(rest.strip_prefix(b"-")?)?;
    Some((a, b))
}

/// The `modules.devname` entry of a module: `devname:` plus a char/block major.
fn device(aliases: &[Vec<u8>]) -> Option<(&[u8], char, u32, u32)> {
    let mut name: Option<&[u8]> = None;
    let mut dev: Option<(char, u32, u32)> = None;
    for a in aliases {
        if let Some(n) = a.strip_prefix(b"devname:") {
            name = Some(n);
        } else if let Some((ma, mi)) = scan_two(a, b"char-major-") {
            dev = Some(('c', ma, mi));
        } else if let Some((ma, mi)) = scan_two(a, b"block-major-") {
            dev = Some(('b', ma, mi));
        }
        if name.is_some() && dev.is_some() {
            break;
        }
    }
    // kmod skips (with an error message) a devname without a device number.
    let (n, (k, ma, mi)) = (name?, dev?);
    Some((n, k, ma, mi))
}

/// Writes `out/name` (0644) with `fill`.
fn emit(
    out: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let path = out.join(name);
    let f = File::create(&path).op("creating", &path)?;
    let mut w = BufWriter::new(f);
    fill(&mut w).writing(&path)?;
    w.flush().writing(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).at(&path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superfast_matches_kmod_buckets() {
        // Values computed with kmod's shared/hash.c.
        assert_eq!(superfast(b""), 0);
        assert_ne!(superfast(b"ext4"), superfast(b"ext3"));
    }

    #[test]
    fn extras_shadow_in_tree_modules() {
        let c = Config::talos();
        // An in-tree module kept, an extras one arrives: the extras one wins.
        assert!(!c.keeps_old(b"kernel/fs/foo.ko", b"extras/foo.ko"));
        // The other way round: the extras one stays.
        assert!(c.keeps_old(b"extras/foo.ko", b"kernel/fs/foo.ko"));
        // Two in-tree: the first stays.
        assert!(c.keeps_old(b"kernel/a/foo.ko", b"kernel/b/foo.ko"));
        // Two under extras/: kmod's quirk lets the later one win.
        assert!(!c.keeps_old(b"extras/a/foo.ko", b"extras/b/foo.ko"));
    }

    #[test]
    fn names_and_aliases_normalise_like_kmod() {
        assert_eq!(modname(b"snd-hda-intel.ko.xz"), b"snd_hda_intel");
        assert_eq!(
            alias_normalize(b"pci:v*d*sv-[0-9]*").unwrap(),
            b"pci:v*d*sv_[0-9]*"
        );
        assert!(alias_normalize(b"a]").is_none());
        assert!(alias_normalize(b"a[b").is_none());
    }

    #[test]
    fn devname_needs_a_major() {
        let a = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            device(&a(&["char-major-10-229", "devname:fuse"])),
            Some((&b"fuse"[..], 'c', 10, 229))
        );
        assert_eq!(device(&a(&["devname:x"])), None);
        assert_eq!(
            device(&a(&["block-major-8-0", "char-major-1-2", "devname:y"])),
            Some((&b"y"[..], 'c', 1, 2))
        );
    }

    #[test]
    fn builtin_modinfo_records() {
        let data =
            b"ext4.alias=fs-ext4\0ext4.license=GPL\0crc32c.alias=crypto-crc32c\0bad\0x.alias=\0";
        let got = builtin_aliases(data);
        assert_eq!(
            got,
            vec![
                (b"ext4".to_vec(), b"fs-ext4".to_vec()),
                (b"crc32c".to_vec(), b"crypto-crc32c".to_vec())
            ]
        );
    }
}
