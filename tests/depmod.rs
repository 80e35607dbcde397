//! depmod judged by kmod 34.2: for the same module tree (real `.ko` files of Debian's
//! kernel package, `scripts/demo-inputs` keeps a small tree in
//! `DIR/amd64/modules/<kver>/`), every `modules.*` file our depmod writes equals the
//! one Debian 13's `depmod` (kmod 34.2, `tests/extensions/kmod-34`) writes, byte for
//! byte, with Talos's `search extras built-in` configuration.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use imager::extensions::depmod::{self, Config, OUTPUTS};

/// kmod 34.2's depmod (`KMOD34_DEPMOD`, else `/opt/kmod-34/bin/depmod`).
fn kmod34() -> PathBuf {
    let p = std::env::var_os("KMOD34_DEPMOD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kmod-34/bin/depmod"));
    assert!(
        p.is_file(),
        "kmod 34.2's depmod missing at {}: run tests/extensions/kmod-34",
        p.display()
    );
    p
}

/// Runs kmod 34.2 on `<base>/lib/modules/<kver>` with `search extras built-in`.
fn run_kmod(base: &Path, kver: &str) {
    let conf = base.join("depmod.conf");
    std::fs::write(&conf, "search extras built-in\n").unwrap();
    let out = Command::new(kmod34())
        .arg("--all")
        .arg("--basedir")
        .arg(base)
        .arg("--config")
        .arg(&conf)
        .arg(kver)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kmod depmod failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts `tree` (a `<kver>` directory) into two scratch trees, runs both depmods and
/// compares every output. Returns the scratch dir (ours under `ours/`).
fn compare(tree: &Path, kver: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let (k, o) = (tmp.path().join("kmod"), tmp.path().join("ours"));
    for b in [&k, &o] {
        std::fs::create_dir_all(b.join("lib/modules")).unwrap();
        common::copy_tree(tree, &b.join("lib/modules").join(kver));
        for f in OUTPUTS {
            let _ = std::fs::remove_file(b.join("lib/modules").join(kver).join(f));
        }
    }
    let t0 = std::time::Instant::now();
    run_kmod(&k, kver);
    let kmod_time = t0.elapsed();
    let dir = o.join("lib/modules").join(kver);
    let t0 = std::time::Instant::now();
    let summary = depmod::run(&dir, &dir, &Config::talos()).unwrap();
    eprintln!(
        "{} modules, {} symbols: kmod 34.2 {:?}, ours {:?}",
        summary.modules,
        summary.symbols,
        kmod_time,
        t0.elapsed()
    );
    for f in OUTPUTS {
        let want = std::fs::read(k.join("lib/modules").join(kver).join(f))
            .unwrap_or_else(|e| panic!("kmod wrote no {f}: {e}"));
        let got = std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("we wrote no {f}: {e}"));
        if want != got {
            let at = want
                .iter()
                .zip(&got)
                .position(|(a, b)| a != b)
                .unwrap_or(want.len().min(got.len()));
            panic!(
                "{f} differs from kmod 34.2's: {} vs {} bytes, first difference at byte {at}\nkmod: {:?}\nours: {:?}",
                want.len(),
                got.len(),
                String::from_utf8_lossy(&want[at.saturating_sub(80)..(at + 80).min(want.len())]),
                String::from_utf8_lossy(&got[at.saturating_sub(80)..(at + 80).min(got.len())]),
            );
        }
    }
    tmp
}

/// A whole kernel's module tree: Debian 12's 6.1 kernel, about 4000 modules, unpacked by
/// `tests/extensions/kernel-modules-6.1` (`DEPMOD_FULL_TREE=<dir>/<kver>`, else the one
/// `<kver>` under `/opt/linux-modules-6.1`). Missing is a failure, not a skip.
#[test]
fn full_kernel_tree_matches_kmod() {
    let tree = match std::env::var_os("DEPMOD_FULL_TREE") {
        Some(t) => PathBuf::from(t),
        None => {
            let base = Path::new("/opt/linux-modules-6.1");
            let found: Vec<PathBuf> = std::fs::read_dir(base)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.join("modules.order").is_file())
                        .collect()
                })
                .unwrap_or_default();
            match &found[..] {
                [one] => one.clone(),
                _ => panic!(
                    "no full module tree: run tests/extensions/kernel-modules-6.1 or set \
                     DEPMOD_FULL_TREE=<dir>/<kver> (found {found:?} under {})",
                    base.display()
                ),
            }
        }
    };
    let kver = tree.file_name().unwrap().to_str().unwrap().to_string();
    let modules = walk_count(&tree);
    assert!(modules > 3000, "{}: only {modules} modules", tree.display());
    compare(&tree, &kver);
}

/// `.ko` files (any compression) under `dir`.
fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                walk_count(&p)
            } else {
                usize::from(p.to_string_lossy().contains(".ko"))
            }
        })
        .sum()
}

/// A scratch `<kver>` tree: the demo tree plus, when `extras`, the test extension's
/// modules under `extras/` (which `modules.order` does not list, as in real extensions).
fn scratch_tree(extras: bool) -> (tempfile::TempDir, PathBuf, String) {
    let (root, kver) = common::demo_modules();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join(&kver);
    common::copy_tree(&root.join(&kver), &tree);
    if extras {
        std::fs::create_dir(tree.join("extras")).unwrap();
        for e in std::fs::read_dir(root.parent().unwrap().join("modules-extra")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), tree.join("extras").join(e.file_name())).unwrap();
        }
    }
    (tmp, tree, kver)
}

fn dep_lines(dir: &Path, kver: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("ours/lib/modules").join(kver).join("modules.dep"))
        .unwrap();
    text.lines().map(str::to_string).collect()
}

/// Every module listed in modules.order: the fully determined case.
#[test]
fn demo_tree_matches_kmod_34() {
    let (_t, tree, kver) = scratch_tree(false);
    let out = compare(&tree, &kver);
    let lines = dep_lines(out.path(), &kver);
    let order = std::fs::read_to_string(tree.join("modules.order")).unwrap();
    // modules.dep follows modules.order.
    let listed: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(listed, order.lines().collect::<Vec<_>>());
    // Real dependencies were found (ext4 needs jbd2, mbcache, crc16).
    let ext4 = lines
        .iter()
        .find(|l| l.starts_with("kernel/fs/ext4/ext4.ko:"))
        .unwrap();
    for d in [
        "kernel/fs/jbd2/jbd2.ko",
        "kernel/fs/mbcache.ko",
        "kernel/lib/crc16.ko",
    ] {
        assert!(ext4.contains(d), "{ext4}");
    }
}

/// extras/ modules missing from modules.order, one shadowing an in-tree module: they
/// follow the listed modules in the documented (hash) order, which is kmod's on glibc.
#[test]
fn extras_shadowing_in_tree_module_match_kmod_34() {
    let (_t, tree, kver) = scratch_tree(true);
    let out = compare(&tree, &kver);
    let lines = dep_lines(out.path(), &kver);
    assert!(lines.iter().any(|l| l == "extras/nbd.ko:"), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("kernel/drivers/block/nbd.ko"))
    );
    // The unlisted ones come last; dm-snapshot needs dm-bufio (also in extras) and dm-mod.
    let n = lines.len();
    let tail: Vec<&str> = lines[n - 3..]
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let mut sorted = tail.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "extras/dm-bufio.ko",
            "extras/dm-snapshot.ko",
            "extras/nbd.ko"
        ]
    );
    let snap = lines
        .iter()
        .find(|l| l.starts_with("extras/dm-snapshot.ko:"))
        .unwrap();
    assert!(
        snap.contains("extras/dm-bufio.ko") && snap.contains("kernel/drivers/md/dm-mod.ko"),
        "{snap}"
    );
}

/// No modules.order at all, and one whose last line lacks its newline (kmod then
/// ignores it): every module in hash order.
#[test]
fn missing_or_unterminated_modules_order_match_kmod_34() {
    let (_t, tree, kver) = scratch_tree(true);
    let order = tree.join("modules.order");
    let text = std::fs::read_to_string(&order).unwrap();
    std::fs::write(&order, text.trim_end_matches('\n')).unwrap();
    compare(&tree, &kver);
    std::fs::remove_file(&order).unwrap();
    std::fs::remove_file(tree.join("modules.builtin")).unwrap();
    std::fs::remove_file(tree.join("modules.builtin.modinfo")).unwrap();
    let out = compare(&tree, &kver);
    // Without modules.builtin kmod still writes an empty modules.builtin.bin.
    let empty = out
        .path()
        .join("ours/lib/modules")
        .join(&kver)
        .join("modules.builtin.bin");
    assert_eq!(std::fs::metadata(empty).unwrap().len(), 0);
}

/// A `.ko` that is not an ELF object: one error naming the file, nothing written.
#[test]
fn corrupt_module_is_an_error_naming_it() {
    let (_t, tree, _kver) = scratch_tree(false);
    std::fs::create_dir(tree.join("extras")).unwrap();
    std::fs::write(tree.join("extras/broken.ko"), b"not an ELF file").unwrap();
    let out = tree.parent().unwrap().join("out");
    let err = depmod::run(&tree, &out, &Config::talos())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("extras/broken.ko") && err.contains("not an ELF file"),
        "{err}"
    );
    assert!(!out.join("modules.dep").exists());
}

/// `.ko.xz` and `.ko.zst` modules (Talos ships none, Debian's newer kernels do): named
/// with their extension in modules.dep, matched to modules.order without it.
#[test]
fn compressed_modules_match_kmod_34() {
    let (_t, tree, kver) = scratch_tree(true);
    let ko = |rel: &str| tree.join(rel);
    let xz = [
        "kernel/fs/ext4/ext4.ko",
        "kernel/lib/crc16.ko",
        "extras/nbd.ko",
    ];
    let zst = ["kernel/fs/jbd2/jbd2.ko", "kernel/drivers/md/dm-mod.ko"];
    for f in xz {
        common::run_ok(Command::new("xz").arg("-C").arg("crc32").arg(ko(f)));
    }
    for f in zst {
        common::run_ok(Command::new("zstd").arg("-q").arg("--rm").arg(ko(f)));
    }
    let out = compare(&tree, &kver);
    let lines = dep_lines(out.path(), &kver);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("kernel/fs/ext4/ext4.ko.xz: ")
                && l.contains("kernel/fs/jbd2/jbd2.ko.zst")
                && l.contains("kernel/lib/crc16.ko.xz")),
        "{lines:?}"
    );
}

/// `weakdep=` modinfo (Linux 6.10+; the 6.1 fixture has none): jbd2's
/// `softdep=pre: crypto-crc32c` rewritten in place to a weakdep.
#[test]
fn weakdep_matches_kmod_34() {
    let (_t, tree, kver) = scratch_tree(false);
    let ko = tree.join("kernel/fs/jbd2/jbd2.ko");
    let mut data = std::fs::read(&ko).unwrap();
    let from = b"softdep=pre: crypto-crc32c";
    let to = b"weakdep=crypto-crc32c\0\0\0\0\0";
    let at = data
        .windows(from.len())
        .position(|w| w == from)
        .expect("jbd2's softdep");
    data[at..at + from.len()].copy_from_slice(to);
    std::fs::write(&ko, data).unwrap();
    let out = compare(&tree, &kver);
    let weak = std::fs::read_to_string(
        out.path()
            .join("ours/lib/modules")
            .join(&kver)
            .join("modules.weakdep"),
    )
    .unwrap();
    assert!(weak.ends_with("\nweakdep jbd2 crypto-crc32c\n"), "{weak}");
}
