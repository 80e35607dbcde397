//! The effective profile of every built-in, architecture and Talos version equals the
//! one the Talos imager prints, field for field and in Talos's field order.
//!
//! The expected dumps are Talos's own (`pkg/imager/profile/testdata`), kept in
//! `tests/data/talos-golden-profiles/<profile>-<arch>-<version>.yaml` (origin, commit and
//! licence in the README there). Each is reproduced the way a Talos user asks for it: a profile document
//! `{baseProfileName: <profile>, arch: <arch>, version: <version>}`, with the version
//! spelled as in the file name (Talos prints the version it was given, unchanged).
//! Nothing is masked: the bootloader Talos picks (GRUB before 1.10, dual-boot on amd64
//! from 1.10, systemd-boot for arm64 and SecureBoot) and the disk size that follows
//! from it are compared like every other field.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use imager::profile::builtin;
use imager::profile::defaults::Roots;
use imager::profile::resolve::{self, Overrides, Source};

const ARCHES: &[&str] = &["amd64", "arm64"];
const VERSIONS: &[&str] = &[
    "1.9.0", "1.10.0", "1.11.0", "1.12.0", "1.13.0", "1.14.0", "1.15.0",
];

fn golden_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/talos-golden-profiles");
    assert!(
        dir.join("README.md").is_file(),
        "Talos golden profile dumps not found at {}: they are part of the repository",
        dir.display()
    );
    dir
}

/// (profile, arch, version) from `<profile>-<arch>-<version>.yaml`.
fn split_name(file: &str) -> Option<(String, String, String)> {
    let stem = file.strip_suffix(".yaml")?;
    let (rest, version) = stem.rsplit_once('-')?;
    let (profile, arch) = rest.rsplit_once('-')?;
    Some((profile.into(), arch.into(), version.into()))
}

fn goldens() -> Vec<(String, String, String, PathBuf)> {
    let mut files: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let (profile, arch, version) =
                split_name(&name).unwrap_or_else(|| panic!("unexpected golden file name {name}"));
            (profile, arch, version, p)
        })
        .collect();
    files.sort();
    files
}

/// The profile document a Talos user writes for a built-in, arch and version.
fn user_profile(profile: &str, arch: &str, version: &str) -> String {
    format!("baseProfileName: {profile}\narch: {arch}\nversion: {version}\n")
}

/// Our dump of `profile` for `arch` and `version`, through the same resolution a
/// profile file on the command line gets.
fn dump(profile: &str, arch: &str, version: &str, dir: &Path) -> Result<String, String> {
    let file = dir.join(format!("{profile}-{arch}-{version}.yaml"));
    std::fs::write(&file, user_profile(profile, arch, version)).unwrap();
    resolve::resolve(
        &Source::File(file),
        &Overrides::default(),
        &Roots::default(),
    )
    .map(|p| p.to_yaml())
    .map_err(|e| e.to_string())
}

/// A line diff of the first difference, for the failure message.
fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    format!(
        "line {}: expected {:?}, got {:?}",
        at + 1,
        e.get(at).copied().unwrap_or("<end>"),
        a.get(at).copied().unwrap_or("<end>")
    )
}

#[test]
fn golden_set_covers_every_builtin_arch_and_version() {
    let goldens = goldens();
    let mut names: Vec<&str> = goldens.iter().map(|(p, ..)| p.as_str()).collect();
    names.dedup();
    let builtins: Vec<&str> = builtin::BUILTINS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, builtins, "the built-in profiles are exactly Talos's");
    assert_eq!(
        goldens.len(),
        builtins.len() * ARCHES.len() * VERSIONS.len()
    );
    for (_, arch, version, _) in &goldens {
        assert!(ARCHES.contains(&arch.as_str()), "{arch}");
        assert!(VERSIONS.contains(&version.as_str()), "{version}");
    }
}

#[test]
fn every_builtin_dump_equals_talos() {
    let scratch = tempfile::tempdir().unwrap();
    let goldens = goldens();
    let mut failures = Vec::new();
    for (profile, arch, version, path) in &goldens {
        let expected = std::fs::read_to_string(path).unwrap();
        match dump(profile, arch, version, scratch.path()) {
            Err(e) => failures.push(format!("{profile}-{arch}-{version}: {e}")),
            Ok(actual) => {
                if expected != actual {
                    failures.push(format!(
                        "{profile}-{arch}-{version}: {}",
                        first_difference(&expected, &actual)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dumps differ from Talos:\n{}",
        failures.len(),
        goldens.len(),
        failures.join("\n")
    );
}

/// Every golden profile is buildable: its dump validates and plans without a refusal
/// (Talos 1.9's arm64 `grub` layout included; the 19 arm64 1.9 images that pick it are
/// built and booted in tests/bootloaders.rs and tests/arm64.rs for metal).
#[test]
fn every_golden_profile_plans() {
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut arm64_grub = 0;
    for (profile, arch, version, _) in goldens() {
        let file = scratch
            .path()
            .join(format!("{profile}-{arch}-{version}.yaml"));
        std::fs::write(&file, user_profile(&profile, &arch, &version)).unwrap();
        let planned = resolve::resolve(
            &Source::File(file),
            &Overrides::default(),
            &Roots::default(),
        )
        .and_then(|p| {
            imager::profile::validate::validate(&p)?;
            imager::plan::Plan::new(&p, 0)
        });
        match planned {
            Err(e) => failures.push(format!("{profile}-{arch}-{version}: {e}")),
            Ok(plan) => {
                if let imager::plan::KindPlan::Disk(disk) = &plan.kind
                    && arch == "arm64"
                    && disk.bootloader == imager::profile::Bootloader::Grub
                {
                    arm64_grub += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden profiles are refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        arm64_grub, 19,
        "arm64 Talos 1.9 disk images with the grub layout"
    );
}

/// The command line prints the same dump: `imager - --print-profile` with the profile
/// document on stdin.
#[test]
fn print_profile_on_stdin_prints_the_talos_dump() {
    let dir = golden_dir();
    for (profile, arch, version) in [
        ("metal", "amd64", "1.9.0"),
        ("metal", "amd64", "1.11.0"),
        ("metal", "arm64", "1.10.0"),
        ("secureboot-iso", "amd64", "1.12.0"),
        ("iso", "amd64", "1.13.0"),
        ("installer", "arm64", "1.9.0"),
        ("secureboot-installer", "amd64", "1.15.0"),
        ("azure", "amd64", "1.14.0"),
    ] {
        let mut child = common::imager()
            .args(["-", "--print-profile"])
            .env_remove("IMAGER_INSTALL_DIR")
            .env_remove("IMAGER_SECUREBOOT_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            user_profile(profile, arch, version).as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        let name = format!("{profile}-{arch}-{version}");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "{name}");
    }
}

/// `imager - --dry-run` on every golden profile, with every input it names present (the
/// demo inputs, generated SecureBoot keys, the GRUB directory): the effective profile is
/// printed, equal to Talos's, and the check that this imager can build it passes (exit 0).
#[test]
fn dry_run_prints_and_checks_every_golden_profile() {
    let scratch = tempfile::tempdir().unwrap();
    let keys = common::gen_keys(scratch.path());
    let demo = common::demo_dir();
    let goldens = goldens();
    let mut failures = Vec::new();
    for (profile, arch, version, path) in &goldens {
        let name = format!("{profile}-{arch}-{version}");
        let expected = std::fs::read_to_string(path).unwrap();
        let mut child = common::imager()
            .args(["-", "--dry-run", "--install-dir"])
            .arg(&demo)
            .arg("--secureboot-dir")
            .arg(&keys)
            .env("IMAGER_GRUB_DIR", common::grub_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            user_profile(profile, arch, version).as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        // The dump names the inputs where they are: Talos's defaults are /usr/install and
        // /secureboot.
        let stdout = String::from_utf8_lossy(&out.stdout)
            .replace(&*demo.to_string_lossy(), "/usr/install")
            .replace(&*keys.to_string_lossy(), "/secureboot");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stdout != expected {
            failures.push(format!(
                "{name}: the printed profile is not Talos's: {}",
                first_difference(&expected, &stdout)
            ));
        }
        if !out.status.success() {
            failures.push(format!("{name}: refused: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(goldens.len(), 448);
}

/// A profile this imager does not build for another reason (a systemd-boot disk image
/// with a board overlay) is still printed by `--dry-run` before the refusal.
#[test]
fn dry_run_prints_an_unsupported_profile_before_refusing_it() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("overlay.tar");
    std::fs::write(
        &tarball,
        common::tar_of(&[("installers/rpi_generic", 0o755, b"#!/bin/sh\n".to_vec())]),
    )
    .unwrap();
    let mut child = common::imager()
        .args(["-", "--dry-run"])
        .env_remove("IMAGER_INSTALL_DIR")
        .env_remove("IMAGER_SECUREBOOT_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("baseProfileName: metal\narch: arm64\nversion: 1.10.0\noverlay:\n  image:\n    tarballPath: {}\n  name: rpi_generic\noutput:\n  kind: image\n  imageOptions:\n    bootloader: sd-boot\n", tarball.display()).as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success());
    assert!(
        stdout.starts_with("arch: arm64\nplatform: metal\n") && stdout.contains("rpi_generic"),
        "{stdout}"
    );
    // Talos's progress line, then the refusal.
    assert_eq!(
        stderr.lines().collect::<Vec<_>>()[0],
        "pulling overlay...",
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("overlays: a disk image with an overlay uses the grub bootloader"),
        "{stderr}"
    );
}

/// With an embedded machine configuration Talos appends the virtual extension's tarball
/// (`<scratch>/embedded-config.tar`, an `imageRef: ""` entry) to `input.systemExtensions`
/// before it dumps the profile (`pkg/imager/imager.go`: `handleEmbeddedConfig`, then
/// `Dump`), after the profile's own extensions and whatever the output kind: the dump
/// is the golden one with `customization.embeddedMachineConfiguration` and that list.
#[test]
fn dump_with_an_embedded_config_lists_its_virtual_extension() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "machine:\n  type: worker\n").unwrap();
    let out_dir = dir.path().join("out");
    let golden = std::fs::read_to_string(golden_dir().join("metal-amd64-1.12.0.yaml")).unwrap();
    for (extra, kind) in [
        (None, "image"),
        (Some("ghcr.io/siderolabs/intel-ucode:20250211"), "image"),
        (None, "cmdline"),
    ] {
        let mut cmd = common::imager();
        cmd.args(["-", "--print-profile", "--output-kind", kind])
            .arg("--output")
            .arg(&out_dir)
            .arg("--embedded-config-path")
            .arg(&config)
            .env_remove("IMAGER_INSTALL_DIR")
            .env_remove("IMAGER_SECUREBOOT_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(image) = extra {
            cmd.args(["--system-extension-image", image]);
        }
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            user_profile("metal", "amd64", "1.12.0").as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let mut list = String::from("  systemExtensions:\n");
        if let Some(image) = extra {
            list.push_str(&format!("    - imageRef: {image}\n"));
        }
        list.push_str(&format!(
            "    - imageRef: \"\"\n      tarballPath: {}/.imager-work-PID/embedded-config.tar\n",
            out_dir.display()
        ));
        let want = golden
            .replace(
                "version: 1.12.0\ninput:\n",
                "version: 1.12.0\ncustomization:\n  embeddedMachineConfiguration: |\n    machine:\n      type: worker\ninput:\n",
            )
            .replace("\noutput:\n", &format!("\n{list}output:\n"));
        // The scratch directory is named by the process id (Talos's is random).
        let at = stdout
            .find(".imager-work-")
            .expect("the dump names the scratch directory")
            + ".imager-work-".len();
        let pid: String = stdout[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let got = stdout.replace(&format!(".imager-work-{pid}/"), ".imager-work-PID/");
        let cut = |s: &str| s[..s.find("output:\n").unwrap()].to_string();
        if kind == "image" {
            assert_eq!(got, want, "{extra:?}");
        } else {
            assert_eq!(cut(&got), cut(&want), "{kind}");
        }
        assert!(!out_dir.exists(), "printing the profile writes nothing");
    }
}
