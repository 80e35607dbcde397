//! UKI assembly and PCR 11 prediction, judged by independent tools: systemd-measure
//! 252 (calculate, and sign against a software TPM), ukify 257 `inspect`, binutils
//! objdump/objcopy, openssl and goblin.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{demo_dir, imager, require_tool, run_ok};
use imager::keys::PcrKey;
use imager::measure::{BANKS, Bank, Digests, Measured, policy, predict};
use imager::plan::Arch;
use imager::uki::{self, UkiProfile, UkiReport, UkiSpec, sections};

const CMDLINE: &str = "console=ttyS0";
const TIMESTAMP: u32 = 1_700_000_000;

fn stub_257() -> PathBuf {
    demo_dir().join("amd64/systemd-stub.efi")
}
fn stub_252() -> PathBuf {
    demo_dir().join("amd64-252/systemd-stub.efi")
}
fn kernel() -> PathBuf {
    demo_dir().join("amd64/vmlinuz")
}
fn initrd() -> PathBuf {
    demo_dir().join("amd64/initramfs.xz")
}

/// A fresh RSA 2048 PCR key made by openssl, and its `openssl rsa -pubout` PEM.
fn pcr_key(dir: &Path) -> (PathBuf, PathBuf) {
    require_tool("openssl");
    let key = dir.join("pcr.pem");
    let public = dir.join("pcr.pub");
    run_ok(
        Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null()),
    );
    run_ok(
        Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public),
    );
    (key, public)
}

fn build(stub: &Path, profiles: &[UkiProfile], key: Option<&PcrKey>, out: &Path) -> UkiReport {
    let spec = UkiSpec {
        arch: Arch::Amd64,
        stub: stub.into(),
        kernel: kernel(),
        initrd: initrd(),
        cmdline: CMDLINE.into(),
        os_release: uki::os_release("Talos", "v1.9.0"),
        splash: None,
        dtb: None,
        profiles: profiles.to_vec(),
        pcr_key: key.cloned(),
        timestamp: TIMESTAMP,
    };
    let mut f = std::fs::File::create(out).unwrap();
    uki::plan(spec, None)
        .and_then(|plan| plan.write(&mut f))
        .unwrap_or_else(|e| panic!("build failed: {e}"))
}

/// A section's bytes as binutils sees them (first section of that name).
fn dump_section(uki: &Path, name: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("dump{name}"));
    run_ok(
        Command::new(require_tool("objcopy"))
            .arg(format!("--dump-section={name}={}", out.display()))
            .arg(uki)
            .arg(dir.join("objcopy.out")),
    );
    std::fs::read(out).unwrap()
}

fn inspect_json(uki: &Path) -> serde_json::Value {
    serde_json::from_str(&run_ok(imager().args(["inspect", "--json"]).arg(uki))).unwrap()
}

/// `bank -> (phase -> value)` from `imager inspect --json` for the target with `profile`.
fn inspected_pcrs(
    j: &serde_json::Value,
    profile: Option<&str>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let target = j["pcr11"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["profile"].as_str() == profile)
        .unwrap();
    target["banks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let mut m: BTreeMap<String, String> = b["phases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        p[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            m.insert(
                "after-stub".into(),
                b["after_stub"].as_str().unwrap().into(),
            );
            (b["bank"].as_str().unwrap().to_string(), m)
        })
        .collect()
}

/// Spec 4.1: Talos' 13-section vector (each section's content is its own name).
#[test]
fn golden_vector_pcr11_and_policy() {
    let names: Vec<&str> = sections::measured_in(257).collect();
    assert_eq!(names.len(), 13);
    let digests: Vec<Digests> = names.iter().map(|n| Digests::of(n.as_bytes())).collect();
    let measured: Vec<Measured> = names
        .iter()
        .zip(&digests)
        .map(|(name, content)| Measured { name, content })
        .collect();
    let expected = [
        (
            "535f91bd7887cccefedd0b0344b3ce7d4fc390f356b276960547502657258839",
            "c0c4f61f8ac39267a7638cde8029b82a0ccd378b2acbfdffb77ee1f0f9d464ec",
            "00000001000b03000800",
        ),
        (
            "07a81a45b36a54296527f424360e376e6cf74ab4681c035079832ea68525bc02926fd793151665408ecc182bd32b5b03",
            "e8f6311e36f9ee038df65255ae7c471d1d1f91ce742b98a152be72337f6c937d",
            "00000001000c03000800",
        ),
        (
            "3521e1c6a94931d1cdd17de5141bb8d6ef6fa88d5eb5d069e1dc321d649ac601087d0613fedcf05e67f7508683f40fecaabbfb994a8876d8d7bd3ebbeb8bdf28",
            "207a8217158f9cc521dca50358a593dc61ed9308ef27da9df4ef64d634309160",
            "00000001000d03000800",
        ),
    ];
    for (b, (pcr, pol, sel)) in predict(&measured).iter().zip(expected) {
        assert_eq!(hex::encode(b.signed()), pcr, "{:?}", b.bank);
        assert_eq!(
            hex::encode(policy::policy_digest(b.bank, b.signed())),
            pol,
            "{:?}",
            b.bank
        );
        assert_eq!(hex::encode(policy::pcr_selection(b.bank)), sel);
    }
}

/// The 252 stub: our sections and PCR 11 against `systemd-measure calculate`, and our
/// `.pcrsig` against `systemd-measure sign` with the same key (swtpm provides the TPM).
#[test]
fn systemd_measure_252_agrees() {
    let measure = require_tool("systemd-measure");
    let dir = tempfile::tempdir().unwrap();
    let (key_path, pub_path) = pcr_key(dir.path());
    let key = PcrKey::load(&key_path).unwrap();
    let out = dir.path().join("uki.efi");
    let report = build(&stub_252(), &[], Some(&key), &out);
    assert!(
        report.stub_version.starts_with("252"),
        "{}",
        report.stub_version
    );

    // Section contents are exactly the inputs; .pcrpkey is what openssl prints.
    assert_eq!(
        dump_section(&out, ".linux", dir.path()),
        std::fs::read(kernel()).unwrap()
    );
    assert_eq!(
        dump_section(&out, ".initrd", dir.path()),
        std::fs::read(initrd()).unwrap()
    );
    assert_eq!(
        dump_section(&out, ".cmdline", dir.path()),
        CMDLINE.as_bytes()
    );
    assert_eq!(
        dump_section(&out, ".pcrpkey", dir.path()),
        std::fs::read(&pub_path).unwrap()
    );
    let osrel = dir.path().join("osrel");
    std::fs::write(&osrel, dump_section(&out, ".osrel", dir.path())).unwrap();
    assert_eq!(
        std::fs::read_to_string(&osrel).unwrap(),
        uki::os_release("Talos", "v1.9.0")
    );
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, CMDLINE).unwrap();

    let sections = |cmd: &mut Command| {
        cmd.arg(format!("--linux={}", kernel().display()))
            .arg(format!("--initrd={}", initrd().display()))
            .arg(format!("--cmdline={}", cmdline.display()))
            .arg(format!("--osrel={}", osrel.display()))
            .arg(format!("--pcrpkey={}", pub_path.display()))
            .args([
                "--bank=sha256",
                "--bank=sha384",
                "--bank=sha512",
                "--json=short",
            ]);
    };
    let mut calc = Command::new(&measure);
    calc.arg("calculate");
    sections(&mut calc);
    calc.args([
        "--phase=enter-initrd",
        "--phase=enter-initrd:leave-initrd",
        "--phase=enter-initrd:leave-initrd:enter-machined",
    ]);
    let theirs: serde_json::Value = serde_json::from_str(&run_ok(&mut calc)).unwrap();
    let ours = inspected_pcrs(&inspect_json(&out), None);
    for bank in BANKS {
        let list = theirs[bank.name()].as_array().unwrap();
        assert_eq!(list.len(), 3);
        for e in list {
            let phase = e["phase"].as_str().unwrap().rsplit(':').next().unwrap();
            assert_eq!(
                ours[bank.name()][phase],
                e["hash"].as_str().unwrap(),
                "{} {phase}",
                bank.name()
            );
        }
        let r = report.pcr11.iter().find(|p| p.bank == bank.name()).unwrap();
        assert_eq!(r.enter_machined, list[2]["hash"].as_str().unwrap());
        assert_eq!(r.after_stub, ours[bank.name()]["after-stub"]);
    }

    // systemd-measure 252 computes the policy on a TPM: run swtpm.
    let swtpm = require_tool("swtpm");
    let sock = dir.path().join("tpm.sock");
    let mut tpm = Command::new(swtpm)
        .args(["socket", "--tpm2", "--flags", "startup-clear", "--tpmstate"])
        .arg(format!("dir={}", dir.path().display()))
        .arg("--server")
        .arg(format!("type=unixio,path={}", sock.display()))
        .arg("--ctrl") // the swtpm TCTI finds the control channel at PATH.ctrl
        .arg(format!("type=unixio,path={}.ctrl", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut sign = Command::new(&measure);
    sign.arg("sign");
    sections(&mut sign);
    sign.arg("--phase=enter-initrd:leave-initrd:enter-machined")
        .arg(format!("--private-key={}", key_path.display()))
        .arg(format!("--public-key={}", pub_path.display()))
        .arg(format!("--tpm2-device=swtpm:path={}", sock.display()));
    let signed = sign.output();
    let _ = tpm.kill();
    let _ = tpm.wait();
    let signed = signed.unwrap();
    assert!(
        signed.status.success(),
        "systemd-measure sign: {}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let pcrsig = dump_section(&out, ".pcrsig", dir.path());
    // Byte for byte (systemd-measure adds a newline after the JSON).
    assert_eq!(
        String::from_utf8_lossy(&pcrsig),
        String::from_utf8_lossy(&signed.stdout).trim_end()
    );
}

/// The 257 stub, signed, two profiles: layout judged by objdump, goblin and ukify;
/// PCR 11 of a profile-less build recomputed independently from objcopy's dumps;
/// inspect agrees with the build report and its .pcrsig checks pass.
#[test]
fn stub_257_signed_with_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, _) = pcr_key(dir.path());
    let key = PcrKey::load(&key_path).unwrap();
    let profiles = [
        UkiProfile {
            id: "main".into(),
            title: None,
            cmdline: None,
        },
        UkiProfile {
            id: "reset".into(),
            title: Some("Reset system disk".into()),
            cmdline: Some(format!("{CMDLINE} talos.experimental.wipe=system")),
        },
    ];
    let out = dir.path().join("uki.efi");
    let report = build(&stub_257(), &profiles, Some(&key), &out);
    assert!(report.stub_version.starts_with("257"));
    let appended: Vec<&str> = report
        .sections
        .iter()
        .skip(6)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        appended,
        [
            ".osrel", ".cmdline", ".uname", ".pcrpkey", ".linux", ".initrd", ".profile", ".pcrsig",
            ".profile", ".cmdline", ".pcrsig"
        ]
    );

    // objdump: every section where its header says, file offsets and RVAs ascending.
    let objdump = run_ok(Command::new(require_tool("objdump")).arg("-h").arg(&out));
    let rows: Vec<(String, u64, u64, u64)> = objdump
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 7 && f[0].parse::<u32>().is_ok()).then(|| {
                let h = |s: &str| u64::from_str_radix(s, 16).unwrap();
                (f[1].to_string(), h(f[2]), h(f[3]), h(f[5]))
            })
        })
        .collect();
    let names: Vec<(String, u64)> = rows.iter().map(|(n, s, ..)| (n.clone(), *s)).collect();
    assert_eq!(names, report.sections);
    for w in rows.windows(2) {
        assert!(
            w[0].3 + w[0].1 <= w[1].3 && w[0].2 + w[0].1 <= w[1].2,
            "overlap: {w:?}"
        );
    }
    assert!(objdump.contains("file format pei-x86-64"));

    // goblin: a valid PE32+ EFI application whose sizes add up.
    let bytes = std::fs::read(&out).unwrap();
    let pe = goblin::pe::PE::parse(&bytes).unwrap();
    let opt = pe.header.optional_header.unwrap();
    assert_eq!(opt.windows_fields.subsystem, 10);
    assert_eq!(pe.header.coff_header.time_date_stamp, TIMESTAMP);
    assert_eq!(pe.sections.len(), report.sections.len());
    let last = pe.sections.last().unwrap();
    assert_eq!(
        opt.windows_fields.size_of_image as u64,
        (last.virtual_address as u64 + last.virtual_size as u64).div_ceil(0x1000) * 0x1000
    );
    assert_eq!(
        bytes.len() as u64,
        last.pointer_to_raw_data as u64 + last.size_of_raw_data as u64
    );

    // ukify (systemd 257) lists the same sections with the same sizes.
    // `UKIFY` (or /opt/ukify/bin/ukify, where .ci/run installs it) is an executable wrapper.
    let ukify = std::env::var_os("UKIFY")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| Some(std::path::PathBuf::from("/opt/ukify/bin/ukify")).filter(|p| p.is_file()))
        .unwrap_or_else(|| require_tool("ukify"));
    let text = run_ok(Command::new(ukify).arg("inspect").arg(&out));
    let mut listed = Vec::new();
    for l in text.lines() {
        if let Some(name) = l.strip_suffix(':').filter(|n| n.starts_with('.')) {
            listed.push((name.to_string(), 0));
        } else if let Some(size) = l
            .trim()
            .strip_prefix("size: ")
            .and_then(|s| s.strip_suffix(" bytes"))
        {
            listed.last_mut().unwrap().1 = size.parse::<u64>().unwrap();
        }
    }
    let expected: Vec<(String, u64)> = report
        .sections
        .iter()
        .filter(|(n, _)| sections::kind(n).is_some())
        .cloned()
        .collect();
    assert_eq!(listed, expected);

    // inspect reads the same PCR 11 back per profile, and every .pcrsig entry checks out.
    let j = inspect_json(&out);
    assert_eq!(j["problems"].as_array().unwrap().len(), 0, "{j:#}");
    for p in &report.pcr11 {
        let ours = inspected_pcrs(&j, p.profile.as_deref());
        assert_eq!(ours[p.bank]["enter-machined"], p.enter_machined);
        assert_eq!(ours[p.bank]["after-stub"], p.after_stub);
    }
    for t in j["pcr11"].as_array().unwrap() {
        let measured: Vec<&str> = t["measured"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            measured,
            [
                ".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".sbat", ".pcrpkey",
                ".profile"
            ]
        );
        let checks = t["pcrsig"].as_array().unwrap();
        assert_eq!(checks.len(), 3);
        for c in checks {
            assert_eq!(c["signature_valid"], true);
            assert_eq!(
                c["matches_phase"],
                "enter-initrd:leave-initrd:enter-machined"
            );
        }
    }
    let main = report
        .pcr11
        .iter()
        .find(|p| p.profile.as_deref() == Some("main"))
        .unwrap();
    let reset = report
        .pcr11
        .iter()
        .find(|p| p.profile.as_deref() == Some("reset"))
        .unwrap();
    assert_ne!(main.enter_machined, reset.enter_machined);
    // Not Authenticode-signed: the human-readable form says so and does not fail.
    let text = run_ok(imager().arg("inspect").arg(&out));
    assert!(text.contains("Authenticode:\n  not signed\n"), "{text}");

    // Without profiles: recompute PCR 11 here from binutils' view of the sections
    // (objcopy's dumps, not our reader), with the extend rule written out again.
    let plain = dir.path().join("plain.efi");
    let report = build(&stub_257(), &[], Some(&key), &plain);
    let order = [
        ".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".sbat", ".pcrpkey",
    ];
    let contents: Vec<Vec<u8>> = order
        .iter()
        .map(|n| dump_section(&plain, n, dir.path()))
        .collect();
    assert!(
        contents[5].starts_with(b"sbat,1,"),
        "stub .sbat measured without padding"
    );
    for bank in BANKS {
        let h = |d: &[u8]| bank.hash(d);
        let mut pcr = vec![0u8; bank.digest_len()];
        let mut extend = |d: Vec<u8>| pcr = h(&[pcr.clone(), d].concat());
        for (name, content) in order.iter().zip(&contents) {
            extend(h(format!("{name}\0").as_bytes()));
            extend(h(content));
        }
        for phase in ["enter-initrd", "leave-initrd", "enter-machined"] {
            extend(h(phase.as_bytes()));
        }
        let r = report.pcr11.iter().find(|p| p.bank == bank.name()).unwrap();
        assert_eq!(r.enter_machined, hex::encode(&pcr), "{}", bank.name());
        // openssl verifies the signature over the raw pol bytes.
        if bank == Bank::Sha256 {
            let pcrsig: serde_json::Value =
                serde_json::from_slice(&dump_section(&plain, ".pcrsig", dir.path())).unwrap();
            let e = &pcrsig["sha256"][0];
            assert_eq!(e["pol"].as_str(), r.pol.as_deref());
            let pol = dir.path().join("pol.bin");
            std::fs::write(&pol, hex::decode(e["pol"].as_str().unwrap()).unwrap()).unwrap();
            use base64::Engine;
            let sig = dir.path().join("sig.bin");
            std::fs::write(
                &sig,
                base64::engine::general_purpose::STANDARD
                    .decode(e["sig"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap();
            let pubkey = dir.path().join("pcr.pub");
            run_ok(
                Command::new("openssl")
                    .args(["dgst", "-sha256", "-verify"])
                    .arg(&pubkey)
                    .arg("-signature")
                    .arg(&sig)
                    .arg(&pol),
            );
            let der = run_ok(Command::new("sh").arg("-c").arg(format!(
                "openssl rsa -pubin -in {} -RSAPublicKey_out -outform DER 2>/dev/null | sha256sum",
                pubkey.display()
            )));
            assert_eq!(
                e["pkfp"].as_str().unwrap(),
                der.split_whitespace().next().unwrap()
            );
        }
    }
}

/// Same inputs and timestamp give the same bytes; unsigned builds have no .pcrsig/.pcrpkey.
#[test]
fn reproducible_unsigned_build() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.efi");
    let b = dir.path().join("b.efi");
    let ra = build(&stub_257(), &[], None, &a);
    build(&stub_257(), &[], None, &b);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(
        ra.sections
            .iter()
            .all(|(n, _)| n != ".pcrsig" && n != ".pcrpkey")
    );
    assert!(
        ra.pcr11
            .iter()
            .all(|p| p.pol.is_none() && p.profile.is_none())
    );
}

/// A changed measured byte makes `imager inspect` fail its .pcrsig check.
#[test]
fn inspect_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, _) = pcr_key(dir.path());
    let key = PcrKey::load(&key_path).unwrap();
    let out = dir.path().join("uki.efi");
    build(&stub_257(), &[], Some(&key), &out);
    let mut bytes = std::fs::read(&out).unwrap();
    let pe = goblin::pe::PE::parse(&bytes).unwrap();
    let cmdline = pe
        .sections
        .iter()
        .find(|s| s.name().unwrap() == ".cmdline")
        .unwrap()
        .pointer_to_raw_data as usize;
    drop(pe);
    bytes[cmdline] = b'C';
    std::fs::write(&out, bytes).unwrap();
    let o = imager().arg("inspect").arg(&out).output().unwrap();
    assert!(!o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("matches no recomputed PCR 11 value"),
        "{text}"
    );
}

fn build_err(stub: &Path, kernel: &Path, initrd: &Path, profiles: &[UkiProfile]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let spec = UkiSpec {
        arch: Arch::Amd64,
        stub: stub.into(),
        kernel: kernel.into(),
        initrd: initrd.into(),
        cmdline: CMDLINE.into(),
        os_release: uki::os_release("Talos", "v1"),
        splash: None,
        dtb: None,
        profiles: profiles.to_vec(),
        pcr_key: None,
        timestamp: 0,
    };
    let mut f = std::fs::File::create(dir.path().join("out.efi")).unwrap();
    uki::plan(spec, None)
        .and_then(|plan| plan.write(&mut f))
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn bad_inputs_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = d.join("notes.txt");
    std::fs::write(&text, "hello, not a PE\n".repeat(10)).unwrap();
    let elf = PathBuf::from("/bin/busybox");
    let console = d.join("console.efi");
    let mut bytes = std::fs::read(stub_257()).unwrap();
    let lfanew = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    bytes[lfanew + 24 + 68] = 3; // Subsystem = Windows console
    std::fs::write(&console, bytes).unwrap();
    let boot = demo_dir().join("amd64/systemd-boot.efi");
    let truncated = d.join("vmlinuz-cut");
    std::fs::write(&truncated, &std::fs::read(kernel()).unwrap()[..1 << 20]).unwrap();
    let not_bz = d.join("Image");
    std::fs::write(&not_bz, [b"MZ".as_slice(), &[0u8; 8192]].concat()).unwrap();
    let missing = d.join("missing-initrd");
    let stub = std::fs::read(stub_257()).unwrap();
    let patch = |from: &[u8], to: &[u8], name: &str| {
        let at = stub.windows(from.len()).position(|w| w == from).unwrap();
        let mut b = stub.clone();
        b[at..at + to.len()].copy_from_slice(to);
        let p = d.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let old = patch(b"systemd-stub 257", b"systemd-stub 251", "old.efi");
    let no_magic = patch(b".sdmagic", b".sdmagiX", "nomagic.efi");
    let (k, i) = (kernel(), initrd());

    let cases: [(&str, String, &Path); 10] = [
        ("systemd 251 stub", build_err(&old, &k, &i, &[]), &old),
        ("no .sdmagic", build_err(&no_magic, &k, &i, &[]), &no_magic),
        ("text stub", build_err(&text, &k, &i, &[]), &text),
        ("ELF stub", build_err(&elf, &k, &i, &[]), &elf),
        ("console PE", build_err(&console, &k, &i, &[]), &console),
        ("systemd-boot as stub", build_err(&boot, &k, &i, &[]), &boot),
        (
            "truncated kernel",
            build_err(&stub_257(), &truncated, &i, &[]),
            &truncated,
        ),
        (
            "not a bzImage",
            build_err(&stub_257(), &not_bz, &i, &[]),
            &not_bz,
        ),
        (
            "missing initrd",
            build_err(&stub_257(), &k, &missing, &[]),
            &missing,
        ),
        (
            "profiles on 252",
            build_err(
                &stub_252(),
                &k,
                &i,
                &[UkiProfile {
                    id: "main".into(),
                    title: None,
                    cmdline: None,
                }],
            ),
            &stub_252(),
        ),
    ];
    let expect = [
        "is too old",
        "no .sdmagic section",
        "not a PE/EFI image: no MZ header",
        "it is an ELF file",
        "not an EFI application",
        "not systemd-stub",
        "truncated kernel",
        "HdrS missing",
        "No such file",
        "does not support UKI profiles",
    ];
    for ((what, err, path), want) in cases.iter().zip(expect) {
        assert!(err.contains(&path.display().to_string()), "{what}: {err}");
        assert!(err.contains(want), "{what}: {err}");
    }

    // inspect on a non-PE fails with the file named, non-zero exit.
    let o = imager().arg("inspect").arg(&text).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("notes.txt"));
}
