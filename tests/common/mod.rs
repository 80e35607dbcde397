//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod boot;
pub mod bootpart;
pub mod build;
pub mod cosign;
pub mod fat;
pub mod goyaml;
pub mod meta;
pub mod oci;
pub mod registry;

#[allow(unused_imports)]
pub use build::demo_build;

use std::path::{Path, PathBuf};
use std::process::Command;

/// GRUB's platform directories for the GRUB layouts: the demo tree's `grub/` (Debian
/// 12's grub-pc-bin, grub-efi-amd64-bin and grub-efi-arm64-bin, unpacked by
/// `scripts/demo-inputs`) when it has all three, else this machine's `/usr/lib/grub`
/// (the same packages; `.ci/run` adds arm64-efi/ there).
pub fn grub_dir() -> PathBuf {
    let demo = demo_dir().join("grub");
    if ["i386-pc", "x86_64-efi", "arm64-efi"]
        .iter()
        .all(|p| demo.join(p).is_dir())
    {
        demo
    } else {
        PathBuf::from("/usr/lib/grub")
    }
}

/// The demo input tree made by `scripts/demo-inputs` (`IMAGER_DEMO_DIR`, default `demo/`).
pub fn demo_dir() -> PathBuf {
    let dir = std::env::var_os("IMAGER_DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("demo"));
    assert!(
        dir.join("amd64/vmlinuz").exists(),
        "demo inputs missing in {}: run scripts/demo-inputs {}",
        dir.display(),
        dir.display()
    );
    dir
}

/// Fails the test with a clear message when an oracle tool is not installed.
pub fn require_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([
            "/usr/sbin".into(),
            "/sbin".into(),
            "/usr/lib/systemd".into(),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{name} is not installed (the CI script installs it)"))
}

/// buildah as the tests run it: chroot isolation, vfs storage (no privileges, no overlayfs).
pub fn buildah() -> Command {
    let mut c = Command::new(require_tool("buildah"));
    c.env("BUILDAH_ISOLATION", "chroot")
        .env("STORAGE_DRIVER", "vfs");
    c
}

/// Panics unless every one of `wanted` is a whole line of `listing` (a file list of `place`).
pub fn assert_listed(listing: &str, wanted: &[&str], place: &str) {
    for f in wanted {
        assert!(
            listing.lines().any(|l| l == *f),
            "{f} in {place}:\n{listing}"
        );
    }
}

/// sbverify: panics unless `file` carries a valid signature of `keys/uki-signing-cert.pem`.
pub fn sbverify(keys: &Path, file: &Path) {
    let cert = keys.join("uki-signing-cert.pem");
    let (ok, text) = sbverify_cert(file, &cert);
    assert!(
        ok,
        "sbverify --cert {} {}: {text}",
        cert.display(),
        file.display()
    );
}

/// What `sbverify --cert CERT FILE` says: whether it accepts, and its stdout and stderr.
pub fn sbverify_cert(file: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new(require_tool("sbverify"))
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `unsquashfs ARGS IMAGE`; panics unless it succeeds, returns stdout.
pub fn unsquashfs(args: &[&str], image: &Path) -> String {
    run_ok(
        Command::new(require_tool("unsquashfs"))
            .args(args)
            .arg(image),
    )
}

/// The demo inputs' kernel module tree: (`.../amd64/modules`, kernel release).
pub fn demo_modules() -> (PathBuf, String) {
    let root = demo_dir().join("amd64/modules");
    let kver = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/demo-inputs)", root.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| !n.starts_with('.'))
        .expect("a kernel release directory");
    (root, kver)
}

/// Copies the tree `from` to `to`, which must not exist, as `cp -a` does (modes, times and
/// symbolic links kept).
pub fn copy_tree(from: &Path, to: &Path) {
    assert!(!to.exists(), "{} exists", to.display());
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// An EC (P-256) private key at `path`, made by openssl: a key of the wrong type.
pub fn ec_key(path: &Path) {
    run_ok(
        Command::new(require_tool("openssl"))
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(path),
    );
}

/// The names in directory `dir`; none when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `imager` binary under test.
pub fn imager() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imager"))
}

/// Runs a command, panics with its output unless it succeeds, returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The members of gzip'd tarball `bytes` (stdout of `--tar-to-stdout`), unpacked by tar into
/// a new temporary directory; panics unless tar accepts it.
pub fn untar_gz(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut tar = Command::new("tar")
        .args(["xzf", "-", "-C"])
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), bytes).unwrap();
    assert!(tar.wait().unwrap().success(), "stdout is a gzip'd tar");
    dir
}

/// A Python with `pefile` (Debian's python3-pefile) and `virt.firmware` (PyPI virt-firmware):
/// the venv `.ci/run` makes at /opt/virt-firmware (it sees Debian's packages), else Debian's python3.
pub fn python() -> Command {
    let venv = Path::new("/opt/virt-firmware/bin/python3");
    Command::new(if venv.is_file() {
        venv
    } else {
        Path::new("/usr/bin/python3")
    })
}

/// Throwaway SecureBoot keys made by `imager gen secureboot uki` and `pcr` in `dir/keys`.
pub fn gen_keys(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    run_ok(
        imager()
            .args(["gen", "secureboot", "uki", "--output"])
            .arg(&keys),
    );
    run_ok(
        imager()
            .args(["gen", "secureboot", "pcr", "--output"])
            .arg(&keys),
    );
    keys
}

/// A copy of the three key files of `from` in a new directory `to` (for a test that spoils one).
pub fn copy_keys(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for f in [
        "uki-signing-key.pem",
        "uki-signing-cert.pem",
        "pcr-signing-key.pem",
    ] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    to.to_path_buf()
}

/// The sha256 PCR 11 a build manifest predicts right after systemd-stub (lower-case hex).
pub fn predicted_pcr11(manifest: &serde_json::Value) -> String {
    manifest["pcr11"]
        .as_array()
        .expect("pcr11 in the manifest")
        .iter()
        .find(|b| b["bank"] == "sha256")
        .expect("sha256 prediction")["afterStub"]
        .as_str()
        .unwrap()
        .to_lowercase()
}

/// (start byte, size) of partition `n` per `sgdisk -i`.
pub fn partition(image: &Path, n: u32, sector: u64) -> (u64, u64, String) {
    let info = run_ok(
        Command::new(require_tool("sgdisk"))
            .arg("-i")
            .arg(n.to_string())
            .arg(image),
    );
    let num = |key: &str| -> u64 {
        let line = info
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {info}"));
        line.split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = num("First sector");
    let last = num("Last sector");
    (first * sector, (last - first + 1) * sector, info)
}

/// A plain tar of (path, mode, bytes) entries, with their parent directories (0755).
pub fn tar_of(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (p, _, _) in entries {
        let mut d = Path::new(p).parent();
        while let Some(x) = d.filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(x.to_path_buf());
            d = x.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, format!("{}/", d.display()), &[][..])
            .unwrap();
    }
    for (p, mode, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The refusal rule's error half: stderr holds exactly one `error:` line, it contains every
/// one of `needles`, and nothing panicked. `what` names the case in the messages. Returns the
/// line. [`refused`] adds the exit status, [`build::Failed::refused`] the output directory.
pub fn one_error_line<'a>(stderr: &'a str, needles: &[&str], what: &str) -> &'a str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line:\n{stderr}");
    for n in needles {
        assert!(
            errors[0].contains(n),
            "{what}: the error names {n:?}: {}",
            errors[0]
        );
    }
    assert!(
        !stderr.contains("panicked")
            && !stderr.contains("stack backtrace")
            && !stderr.contains("RUST_BACKTRACE"),
        "{what}: no panic:\n{stderr}"
    );
    errors[0]
}

/// A finished `imager` that refused: exit status not success, and [`one_error_line`]
/// with `needles`. Returns the line.
pub fn refused(out: &std::process::Output, needles: &[&str], what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: must fail:\n{err}");
    one_error_line(&err, needles, what).to_string()
}

/// The refusal rule's other half: a refused run left nothing in `dir` (a directory that
/// is not there holds nothing).
pub fn assert_nothing_left(dir: &Path, what: &str) {
    let left = entries(dir);
    assert!(
        left.is_empty(),
        "{what}: nothing may be left in {}: {left:?}",
        dir.display()
    );
}

/// Polls `ready` every 100 ms until it holds (true) or `limit` passes (false). Callers assert
/// the result, so a wait that times out fails where it happened, never later or silently.
pub fn wait_until(limit: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `sha256:<hex>` of `bytes`, as OCI digests and the manifests write it.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The SHA-256 of `bytes` in lower-case hex, without the `sha256:` of [`sha256`] (file
/// names of blob stores, `sha256sum`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `len` deterministic, incompressible bytes from `seed` (xorshift64 over the seed spread
/// by the golden ratio, never zero; the low byte of each step). The one generator of test
/// data, so fixtures agree across files.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Panics unless GRUB's own parser (`grub-script-check`, package grub-common) accepts
/// `cfg`; `what` names the file in the message.
pub fn grub_script_check(cfg: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grub.cfg");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(require_tool("grub-script-check"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grub-script-check refuses {what}: {}{}\n{cfg}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compression of a system extension's squashfs as the Talos imager asks mksquashfs for it.
#[derive(Debug, Clone, Copy)]
pub enum TalosSquashfs {
    /// Talos 1.8 on: `-comp zstd -Xcompression-level 18`.
    Zstd18,
    /// Before 1.8: `-comp xz -Xdict-size 100%`.
    Xz,
}

/// `mksquashfs SRC DEST` (the binary `bin`: Debian's 4.5.1 or trixie's 4.6.1) with the
/// Talos imager's flags (`-all-root -noappend -no-progress` and the compression) and
/// `SOURCE_DATE_EPOCH` = the tests' epoch; the caller may add arguments, then runs it.
pub fn talos_mksquashfs(
    bin: impl AsRef<std::ffi::OsStr>,
    src: &Path,
    dest: &Path,
    compression: TalosSquashfs,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(src)
        .arg(dest)
        .args(["-all-root", "-noappend", "-no-progress"])
        .args(match compression {
            TalosSquashfs::Zstd18 => ["-comp", "zstd", "-Xcompression-level", "18"],
            TalosSquashfs::Xz => ["-comp", "xz", "-Xdict-size", "100%"],
        })
        .env("SOURCE_DATE_EPOCH", build::EPOCH.to_string());
    cmd
}
