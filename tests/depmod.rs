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

/// The module tree of the demo inputs: (`.../modules`, kernel release).
fn demo_modules() -> (PathBuf, String) {
    let root = common::demo_dir().join("amd64/modules");
    let kver = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/demo-inputs)", root.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| !n.starts_with('.'))
        .expect("a kernel release directory");
    (root, kver)
}

fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp").arg("-a").arg(src).arg(dst).status().unwrap();
    assert!(st.success());
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
        copy_tree(tree, &b.join("lib/modules").join(kver));
        for f in OUTPUTS {
            let _ = std::fs::remove_file(b.join("lib/modules").join(kver).join(f));
        }
    }
    run_kmod(&k, kver);
    let dir = o.join("lib/modules").join(kver);
    depmod::run(&dir, &dir, &Config::talos()).unwrap();
    for f in OUTPUTS {
        let want = std::fs::read(k.join("lib/modules").join(kver).join(f))
            .unwrap_or_else(|e| panic!("kmod wrote no {f}: {e}"));
        let got = std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("we wrote no {f}: {e}"));
        if want != got {
            let at = want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
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

/// A whole kernel's module tree (`DEPMOD_FULL_TREE=<dir>/<kver>`), when given.
#[test]
fn full_kernel_tree_matches_kmod_when_given() {
    let Some(tree) = std::env::var_os("DEPMOD_FULL_TREE").map(PathBuf::from) else {
        eprintln!("DEPMOD_FULL_TREE not set: skipped");
        return;
    };
    let kver = tree.file_name().unwrap().to_str().unwrap().to_string();
    compare(&tree, &kver);
}
