//! Boots test media in QEMU through `tests/boot/qemu-boot` and reads what the demo initramfs
//! reported on the serial console (see `scripts/demo-inputs` for its `/init`).
//!
//! Boots are slow (15-40 s each under TCG), so tests that boot carry `boot` in their name: the
//! nextest `boot` group runs them one at a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::require_tool;

/// What the guest boots from.
#[derive(Debug, Clone)]
pub enum Media {
    /// An ISO attached as a CD-ROM.
    Cdrom(PathBuf),
    /// A raw disk image attached as a virtio disk (writes go to a throwaway overlay).
    Disk(PathBuf),
    /// A qcow2 disk image, attached the same way.
    Qcow2(PathBuf),
    /// A VMDK (e.g. the stream-optimized `disk.vmdk` of an OVA), attached the same way.
    Vmdk(PathBuf),
    /// A directory copied into a FAT disk, e.g. holding `EFI/BOOT/BOOTX64.EFI`.
    EspDir(PathBuf),
}

/// Firmware and SecureBoot state of the machine.
#[derive(Debug, Clone)]
pub enum SecureBoot {
    /// OVMF without keys: SecureBoot not enforced.
    Off,
    /// SecureBoot-capable OVMF with an empty key store (setup mode); resets are allowed, so
    /// systemd-boot can enrol its keys and reset once.
    Setup,
    /// This PEM certificate enrolled as PK, KEK and db; SecureBoot enforced.
    Enrolled(PathBuf),
    /// Legacy BIOS (SeaBIOS): no UEFI at all.
    Bios,
}

/// The serial console of one boot and what the test `/init` reported in it.
#[derive(Debug, Clone)]
pub struct BootLog {
    /// The whole serial log (firmware, bootloader, kernel, `/init`), `\r` removed.
    pub text: String,
    /// `IMAGER-BOOT-OK` appeared: the kernel ran the demo initramfs' `/init`.
    pub marker: bool,
    /// PCR 11 (SHA-256 bank) as `/init` read it, lower-case hex; needs a TPM.
    pub pcr11_sha256: Option<String>,
    /// Last byte of the `SecureBoot` EFI variable: 1 when enforced.
    pub secureboot: Option<u8>,
    /// The kernel command line (`/proc/cmdline`).
    pub cmdline: Option<String>,
    /// Where the log is kept (under the cargo target directory) for a look after a failure.
    pub path: PathBuf,
}

impl BootLog {
    /// Reads the `/init` report out of a serial log.
    pub fn parse(text: &str, path: PathBuf) -> BootLog {
        let text = text.replace('\r', "");
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.trim_start().strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        BootLog {
            marker: text.lines().any(|l| l.trim() == "IMAGER-BOOT-OK"),
            pcr11_sha256: value("pcr11-sha256: ").map(|v| v.to_ascii_lowercase()),
            secureboot: value("secureboot: ").and_then(|v| v.parse().ok()),
            cmdline: value("cmdline: "),
            path,
            text,
        }
    }

    /// Panics unless the guest reached the marker with SecureBoot state `secureboot` (1:
    /// enforced) and PCR 11 (sha256) as `predicted`; each message names the log.
    pub fn assert_measured(&self, secureboot: u8, predicted: &str) {
        let log = self.path.display();
        assert!(self.marker, "boots to the marker; log {log}");
        assert_eq!(
            self.secureboot,
            Some(secureboot),
            "SecureBoot state; log {log}"
        );
        assert_eq!(
            self.pcr11_sha256.as_deref(),
            Some(predicted),
            "PCR 11 (sha256) after the stub; log {log}"
        );
    }

    /// Panics unless UEFI firmware ran and refused the image under SecureBoot: no marker, no
    /// kernel, and the firmware's own words for a failed signature check.
    pub fn assert_refused_by_secureboot(&self) {
        let log = self.path.display();
        assert!(!self.marker, "the image booted; log {log}");
        assert!(
            !self.contains("Linux version"),
            "a kernel started; log {log}"
        );
        assert!(
            self.contains("Access Denied") || self.contains("Security Violation"),
            "no refusal from the firmware (\"Access Denied\" / \"Security Violation\"); log {log}"
        );
    }

    /// The VGA text screen the harness read at the end of a SeaBIOS run (GRUB's boot.img,
    /// diskboot.img and early core print only there), if any.
    pub fn screen(&self) -> Option<&str> {
        let (_, rest) = self
            .text
            .split_once("--- VGA text screen at the end ---\n")?;
        Some(rest.split("\n--- ").next().unwrap_or(rest))
    }

    /// Panics unless SeaBIOS handed over to the disk, GRUB's boot sectors ran ("GRUB
    /// loading" on the screen: boot.img and diskboot.img read core.img) and GRUB then
    /// failed: no "Welcome to GRUB!", no kernel, no marker.
    pub fn assert_bios_reached_disk_and_grub_failed(&self) {
        let log = self.path.display();
        let screen = self
            .screen()
            .unwrap_or_else(|| panic!("no VGA screen in the log (not a SeaBIOS run?); log {log}"));
        assert!(
            screen.contains("Booting from Hard Disk"),
            "SeaBIOS never reached the disk; screen:\n{screen}\nlog {log}"
        );
        assert!(
            screen.contains("GRUB loading"),
            "GRUB's boot sectors did not run; screen:\n{screen}\nlog {log}"
        );
        assert!(
            !screen.contains("Welcome to GRUB"),
            "GRUB's kernel started; screen:\n{screen}\nlog {log}"
        );
        assert!(!self.marker, "the image booted; log {log}");
        assert!(
            !self.contains("Linux version"),
            "a kernel started; log {log}"
        );
    }

    /// Does the log contain `needle`?
    pub fn contains(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }
}

/// The machine a boot emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `qemu-system-x86_64 -machine q35` with OVMF (or SeaBIOS).
    Amd64,
    /// `qemu-system-aarch64 -machine virt -cpu max` with AAVMF.
    Arm64,
}

/// An ESP directory `dir/esp` with `efi` as the firmware's fallback boot loader of `arch`
/// (`EFI/BOOT/BOOTX64.EFI` or `EFI/BOOT/BOOTAA64.EFI`), for `Media::EspDir`.
pub fn esp_with(efi: &Path, dir: &Path, arch: Arch) -> PathBuf {
    let name = match arch {
        Arch::Amd64 => "BOOTX64.EFI",
        Arch::Arm64 => "BOOTAA64.EFI",
    };
    let esp = dir.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::copy(efi, esp.join("EFI/BOOT").join(name)).unwrap();
    esp
}

/// The harness script.
pub fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boot/qemu-boot")
}

/// Boots `media` on an amd64 machine and waits until the guest powers off, gets stuck or
/// `timeout` seconds pass. Panics only when the harness cannot run the machine (missing
/// tools, bad paths).
pub fn boot(media: Media, sb: SecureBoot, tpm: bool, timeout: u64) -> BootLog {
    boot_arch(Arch::Amd64, media, sb, tpm, timeout)
}

/// [`boot`] on the machine of `arch`.
pub fn boot_arch(arch: Arch, media: Media, sb: SecureBoot, tpm: bool, timeout: u64) -> BootLog {
    let (qemu, arch_name) = match arch {
        Arch::Amd64 => ("qemu-system-x86_64", "amd64"),
        Arch::Arm64 => ("qemu-system-aarch64", "arm64"),
    };
    require_tool(qemu);
    if arch == Arch::Arm64 {
        assert!(
            Path::new("/usr/share/AAVMF/AAVMF_CODE.fd").is_file(),
            "AAVMF is not installed (apt-get install qemu-efi-aarch64)"
        );
    }
    if tpm {
        require_tool("swtpm");
    }
    let mut cmd = Command::new(harness());
    cmd.args(["--arch", arch_name]);
    let (kind, path) = match &media {
        Media::Cdrom(p) => ("cdrom", p),
        Media::Disk(p) => ("disk", p),
        Media::Qcow2(p) => ("qcow2", p),
        Media::Vmdk(p) => ("vmdk", p),
        Media::EspDir(p) => {
            require_tool("mkfs.fat");
            require_tool("mcopy");
            ("esp-dir", p)
        }
    };
    cmd.arg("--media").arg(kind).arg(path);
    match &sb {
        SecureBoot::Off => cmd.args(["--secureboot", "off"]),
        SecureBoot::Setup => cmd.args(["--secureboot", "setup"]),
        SecureBoot::Enrolled(cert) => {
            // The harness finds virt-fw-vars itself (PATH or /opt/virt-firmware) or says so.
            let mut mode = std::ffi::OsString::from("enrolled:");
            mode.push(cert);
            cmd.arg("--secureboot").arg(mode)
        }
        SecureBoot::Bios => cmd.arg("--bios"),
    };
    if tpm {
        cmd.arg("--tpm");
    }
    let log = log_path(path);
    cmd.arg("--timeout")
        .arg(timeout.to_string())
        .arg("--log")
        .arg(&log);

    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // 0: marker seen, 1: the firmware ran, no marker; 3: QEMU or the firmware did not run;
    // 2: the harness refused its arguments. Only 0 and 1 are boots a test can judge.
    let code = out.status.code();
    let tail = || {
        format!(
            "{}{}\nlog {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log.display()
        )
    };
    assert!(
        code != Some(3),
        "QEMU or the firmware did not run, nothing was booted ({cmd:?}):\n{}",
        tail()
    );
    assert!(
        matches!(code, Some(0 | 1)),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        tail()
    );
    let text = std::fs::read(&log).unwrap_or_else(|e| panic!("cannot read {}: {e}", log.display()));
    let parsed = BootLog::parse(&String::from_utf8_lossy(&text), log);
    assert_eq!(
        parsed.marker,
        code == Some(0),
        "the harness and the log disagree on the marker; log {}",
        parsed.path.display()
    );
    parsed
}

/// A fresh log file name under the target directory, named after the medium.
fn log_path(media: &Path) -> PathBuf {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("boot-logs");
    std::fs::create_dir_all(&dir).expect("create boot log directory");
    let name = media.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(
        "{name}-{}-{}.log",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs QEMU (SeaBIOS + iPXE network boot from QEMU's user network: its TFTP server
/// serves `tftp_dir`, the host's loopback is 10.0.2.2) until `marker` shows on the serial
/// console or `timeout` passes; returns the console text.
pub fn pxe_boot(
    tftp_dir: &Path,
    bootfile: &str,
    marker: &str,
    timeout: std::time::Duration,
) -> String {
    let qemu = require_tool("qemu-system-x86_64");
    let log = tftp_dir.join("serial.log");
    let mut child = std::process::Command::new(qemu)
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-display",
            "none",
            "-no-reboot",
            "-boot",
            "n",
        ])
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,tftp={},bootfile={bootfile}",
            tftp_dir.display()
        ))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("qemu starts");
    let start = std::time::Instant::now();
    let mut text = String::new();
    while start.elapsed() < timeout {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(marker) || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    format!("{text}\n--- qemu stderr ---\n{err}")
}
