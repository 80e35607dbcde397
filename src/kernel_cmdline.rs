//! The kernel command line, assembled the way the Talos imager does: platform,
//! platform arguments, hardening defaults (version-dependent), SecureBoot lockdown,
//! META transport, then the user's extra arguments with their override rules.

use crate::meta::{self, MetaValue};
use crate::profile::platforms::PLATFORM_ARGS;
use crate::profile::{OutputKind, Profile};

fn platform_args(platform: &str, arch: &str, profile: &Profile) -> String {
    if platform == "metal" && arch == "amd64" && !profile.quirks().metal_without_serial_console() {
        return "console=ttyS0 console=tty0".into();
    }
    let mut args = PLATFORM_ARGS
        .iter()
        .find(|(p, a, _)| *p == platform && a.is_none_or(|a| a == arch))
        .map(|(_, _, args)| args.to_string())
        .unwrap_or_default();
    if platform == "aws" && !profile.quirks().legacy_hardening_args() {
        args.push_str(" nvme_core.io_timeout=4294967295");
    }
    args
}

/// An ordered multimap of kernel arguments: keys keep the position of their first
/// insertion; a key may hold several values (one token each).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cmdline {
    args: Vec<(String, Vec<Option<String>>)>,
}

fn split(token: &str) -> (&str, Option<&str>) {
    match token.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (token, None),
    }
}

impl Cmdline {
    fn position(&self, key: &str) -> Option<usize> {
        self.args.iter().position(|(k, _)| k == key)
    }

    /// Appends a value to `key` (adds the key at the end if new).
    pub fn append(&mut self, token: &str) {
        let (key, value) = split(token);
        match self.position(key) {
            Some(i) => self.args[i].1.push(value.map(str::to_string)),
            None => self
                .args
                .push((key.to_string(), vec![value.map(str::to_string)])),
        }
    }

    /// Replaces every value of `key` by this one (keeps the key's position).
    pub fn set(&mut self, token: &str) {
        let (key, value) = split(token);
        match self.position(key) {
            Some(i) => self.args[i].1 = vec![value.map(str::to_string)],
            None => self
                .args
                .push((key.to_string(), vec![value.map(str::to_string)])),
        }
    }

    /// Removes `key` entirely, or just `value` of it.
    pub fn remove(&mut self, key: &str, value: Option<&str>) {
        if let Some(i) = self.position(key) {
            match value {
                None => {
                    self.args.remove(i);
                }
                Some(v) => {
                    self.args[i].1.retain(|x| x.as_deref() != Some(v));
                    if self.args[i].1.is_empty() {
                        self.args.remove(i);
                    }
                }
            }
        }
    }

    /// Adds a space-separated list: each key replaced by the list's values.
    fn set_all(&mut self, tokens: &str) {
        let mut seen: Vec<&str> = Vec::new();
        for token in tokens.split_whitespace() {
            let (key, _) = split(token);
            if seen.contains(&key) {
                self.append(token);
            } else {
                self.set(token);
                seen.push(key);
            }
        }
    }

    /// Applies user arguments: `-key` / `-key=value` remove; `console=` and
    /// `talos.platform=` replace the defaults (further ones append); others append.
    pub fn apply_extra(&mut self, extra: &[String]) {
        let mut replaced: Vec<String> = Vec::new();
        for arg in extra {
            if let Some(rest) = arg.strip_prefix('-') {
                let (key, value) = split(rest);
                self.remove(key, value);
                continue;
            }
            let (key, _) = split(arg);
            let replaces = matches!(key, "console" | "talos.platform");
            if replaces && !replaced.iter().any(|k| k == key) {
                self.set(arg);
                replaced.push(key.to_string());
            } else {
                self.append(arg);
            }
        }
    }

    /// Values of `key`.
    pub fn get(&self, key: &str) -> Vec<Option<&str>> {
        self.position(key)
            .map(|i| self.args[i].1.iter().map(|v| v.as_deref()).collect())
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Cmdline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (key, values) in &self.args {
            for value in values {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                match value {
                    Some(v) => write!(f, "{key}={v}")?,
                    None => f.write_str(key)?,
                }
            }
        }
        Ok(())
    }
}

/// The kernel command line for a (defaulted, validated) profile building `kind`.
pub fn build(profile: &Profile, kind: OutputKind) -> Cmdline {
    build_with_overlay(profile, kind, &[])
}

/// [`build`] with an overlay installer's kernel arguments, set after the platform's
/// (and the ISO's `talos.halt_if_installed`) by the same rule as the platform's
/// (Talos `buildCmdline`: `SetAll(overlayOpts.KernelArgs)`).
pub fn build_with_overlay(profile: &Profile, kind: OutputKind, overlay_args: &[String]) -> Cmdline {
    let quirks = profile.quirks();
    let mut c = Cmdline::default();
    c.set(&format!("talos.platform={}", profile.platform));
    c.set_all(&platform_args(&profile.platform, &profile.arch, profile));
    if quirks.halt_if_installed() && kind == OutputKind::Iso {
        c.set("talos.halt_if_installed=1");
    }
    if !overlay_args.is_empty() {
        c.set_all(&overlay_args.join(" "));
    }
    let legacy = quirks.legacy_hardening_args();
    let defaults: [(&str, bool); 11] = [
        ("init_on_alloc=1", legacy),
        ("slab_nomerge", true),
        ("pti=on", true),
        ("consoleblank=0", true),
        ("nvme_core.io_timeout=4294967295", legacy),
        ("printk.devkmsg=on", true),
        ("ima_template=ima-ng", quirks.ima()),
        ("ima_appraise=fix", quirks.ima()),
        ("ima_hash=sha512", quirks.ima()),
        ("selinux=1", quirks.selinux()),
        ("module.sig_enforce=1", quirks.module_sig_enforce()),
    ];
    for (arg, on) in defaults {
        if on {
            c.append(arg);
        }
    }
    if quirks.proc_mem_override() {
        c.append("proc_mem.force_override=never");
    }
    if profile.secureboot() && quirks.lockdown() {
        c.append("lockdown=confidentiality");
    }
    let meta_values: &[MetaValue] = &profile.customization.meta_contents;
    if !meta_values.is_empty() && kind != OutputKind::Image {
        let payload = meta::cmdline_payload(meta_values, quirks.gzip_meta_payload());
        c.append(&format!(
            "talos.environment=INSTALLER_META_BASE64={payload}"
        ));
    }
    c.apply_extra(&profile.customization.extra_kernel_args);
    c
}

/// Longest command line (bytes, without the terminating NUL) the arm64 kernel takes:
/// `COMMAND_LINE_SIZE` (4096, NUL included).
const ARM64_MAX: usize = 4095;
/// x86 kernels whose boot header predates `cmdline_size` (boot protocol < 2.06) take 255.
const X86_OLD_MAX: usize = 255;

/// Longest command line (without the NUL) the kernel at `kernel` accepts on `arch`. On
/// x86 the bzImage boot header says so (`cmdline_size` at 0x238, boot protocol >= 2.06,
/// Documentation/arch/x86/boot.rst); 2047 (`COMMAND_LINE_SIZE` 2048) when the header
/// cannot be read.
pub fn max_len(arch: &str, kernel: &std::path::Path) -> usize {
    if arch != "amd64" {
        return ARM64_MAX;
    }
    let mut head = [0u8; 0x23c];
    let read =
        std::fs::File::open(kernel).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    if read.is_err() || &head[0x202..0x206] != b"HdrS" {
        return 2047;
    }
    let protocol = u16::from_le_bytes([head[0x206], head[0x207]]);
    if protocol < 0x206 {
        return X86_OLD_MAX;
    }
    u32::from_le_bytes(head[0x238..0x23c].try_into().expect("4 bytes")) as usize
}

/// Refuses a command line longer than the kernel takes (the kernel would cut it, and
/// with it the META network configuration or `talos.config=`).
pub fn check_len(cmdline: &str, arch: &str, kernel: &std::path::Path) -> crate::error::Result<()> {
    let max = max_len(arch, kernel);
    if cmdline.len() <= max {
        return Ok(());
    }
    let meta = if cmdline.contains("INSTALLER_META_BASE64=") {
        "; large META values (a network configuration) belong in the META partition of a disk image (`imager metal --meta ...`)"
    } else {
        ""
    };
    Err(crate::error::Error::invalid(format!(
        "the kernel command line is {} bytes; the {arch} kernel {} takes at most {max}{meta}",
        cmdline.len(),
        kernel.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(yaml: &str) -> Profile {
        let mut p = Profile::from_yaml(yaml, "test").unwrap();
        crate::profile::defaults::fill(&mut p, &Default::default());
        p
    }

    #[test]
    fn secureboot_metal_1_9_matches_the_talos_docs() {
        let p = profile(
            "arch: amd64\nplatform: metal\nsecureboot: true\nversion: v1.9.2\noutput: {kind: cmdline, outFormat: raw}",
        );
        assert_eq!(
            build(&p, p.output.kind.unwrap_or(OutputKind::Iso)).to_string(),
            "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 lockdown=confidentiality"
        );
    }

    #[test]
    fn current_metal_image_and_iso() {
        let p = profile(
            "arch: amd64\nplatform: metal\nversion: v1.15.0\noutput: {kind: image, outFormat: raw, imageOptions: {diskSize: 1}}",
        );
        assert_eq!(
            build(&p, p.output.kind.unwrap_or(OutputKind::Iso)).to_string(),
            "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
        let p = profile(
            "arch: amd64\nplatform: metal\nversion: v1.15.0\noutput: {kind: iso, outFormat: raw}",
        );
        assert!(
            build(&p, p.output.kind.unwrap_or(OutputKind::Iso))
                .to_string()
                .starts_with(
                    "talos.platform=metal console=tty0 talos.halt_if_installed=1 slab_nomerge"
                )
        );
    }

    #[test]
    fn extra_args_replace_remove_and_append() {
        let mut c = Cmdline::default();
        c.set_all("talos.platform=metal console=ttyAMA0 console=tty0 pti=on slab_nomerge");
        c.apply_extra(&[
            "console=ttyS0".into(),
            "console=tty1".into(),
            "-pti".into(),
            "-slab_nomerge".into(),
            "foo=a,b".into(),
            "foo=c".into(),
        ]);
        assert_eq!(
            c.to_string(),
            "talos.platform=metal console=ttyS0 console=tty1 foo=a,b foo=c"
        );
        c.apply_extra(&["-foo=a,b".into()]);
        assert_eq!(c.get("foo"), vec![Some("c")]);
    }

    #[test]
    fn arm64_and_old_versions() {
        let p = profile(
            "arch: arm64\nplatform: metal\nversion: v1.9.2\noutput: {kind: cmdline, outFormat: raw}",
        );
        assert!(
            build(&p, p.output.kind.unwrap_or(OutputKind::Iso))
                .to_string()
                .starts_with("talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1")
        );
        let p = profile(
            "arch: amd64\nplatform: metal\nversion: v1.7.0\noutput: {kind: cmdline, outFormat: raw}",
        );
        assert!(
            build(&p, p.output.kind.unwrap_or(OutputKind::Iso))
                .to_string()
                .starts_with("talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1")
        );
    }

    #[test]
    fn meta_travels_as_installer_environment_except_for_images() {
        let p = profile(
            "arch: amd64\nplatform: metal\noutput: {kind: iso, outFormat: raw}\ncustomization: {metaContents: [{key: 10, value: '{}'}]}",
        );
        assert!(
            build(&p, p.output.kind.unwrap_or(OutputKind::Iso))
                .to_string()
                .ends_with("talos.environment=INSTALLER_META_BASE64=MHgwYT17fQ==")
        );
        let p = profile(
            "arch: amd64\nplatform: metal\noutput: {kind: image, outFormat: raw, imageOptions: {diskSize: 1}}\ncustomization: {metaContents: [{key: 10, value: '{}'}]}",
        );
        assert!(
            !build(&p, p.output.kind.unwrap_or(OutputKind::Iso))
                .to_string()
                .contains("talos.environment")
        );
    }
}
