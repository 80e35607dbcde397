//! VMware OVA and the alibabacloud qcow2, judged by independent tools: GNU tar lists and
//! unpacks the OVA, `qemu-img` reads the VMDK as stream-optimized, checks it and converts
//! it back to our raw image byte for byte, Python's XML parser reads the OVF, `sha256sum`
//! agrees with the manifest; `qemu-img` reads the alibabacloud qcow2's 8 KiB clusters.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{demo_build, require_tool, run_ok};

/// A profile file in `dir` that builds `base` with `extra` YAML under `output.imageOptions`
/// (and optionally a version).
fn profile(dir: &Path, name: &str, base: &str, version: Option<&str>, image: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let version = version
        .map(|v| format!("version: {v}\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!("baseProfileName: {base}\n{version}output:\n  imageOptions:\n{image}"),
    )
    .unwrap();
    path
}

/// `qemu-img info --output=json` of `path` read as `format`.
fn qemu_info(path: &Path, format: &str) -> serde_json::Value {
    let out = run_ok(
        Command::new(require_tool("qemu-img"))
            .args(["info", "--output=json", "-f", format])
            .arg(path),
    );
    serde_json::from_str(&out).unwrap()
}

/// Panics unless `qemu-img convert -f format -O raw path` gives the bytes of `raw`: the
/// same length, and `qemu-img compare` finds the same content (it skips holes on both
/// sides; `cmp` would read GiBs of zeros).
fn assert_converts_back(path: &Path, format: &str, raw: &Path, scratch: &Path) {
    let back = scratch.join(format!("{format}.back.raw"));
    run_ok(
        Command::new(require_tool("qemu-img"))
            .args(["convert", "-f", format, "-O", "raw"])
            .arg(path)
            .arg(&back),
    );
    assert_eq!(
        std::fs::metadata(&back).unwrap().len(),
        std::fs::metadata(raw).unwrap().len(),
        "{format} converts back to the raw image's size"
    );
    let same = run_ok(
        Command::new(require_tool("qemu-img"))
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&back)
            .arg(raw),
    );
    assert!(same.contains("Images are identical."), "{same}");
    std::fs::remove_file(&back).unwrap();
}

/// The OVF's values, read by Python's XML parser (an independent judge), one `key=value`
/// a line.
fn ovf_values(ovf: &Path) -> String {
    const SCRIPT: &str = r#"
import sys, xml.etree.ElementTree as ET
ns = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
      "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
      "vmw": "http://www.vmware.com/schema/ovf"}
O = "{%s}" % ns["ovf"]
V = "{%s}" % ns["vmw"]
root = ET.parse(sys.argv[1]).getroot()
f = root.find("ovf:References/ovf:File", ns)
print("file", f.get(O + "href"), f.get(O + "id"), f.get(O + "size"))
d = root.find("ovf:DiskSection/ovf:Disk", ns)
print("disk", d.get(O + "capacity"), d.get(O + "capacityAllocationUnits"), d.get(O + "diskId"), d.get(O + "fileRef"), d.get(O + "format"))
print("network", root.find("ovf:NetworkSection/ovf:Network", ns).get(O + "name"))
vs = root.find("ovf:VirtualSystem", ns)
print("system", vs.get(O + "id"), vs.find("ovf:Name", ns).text)
p = vs.find("ovf:ProductSection/ovf:Property", ns)
print("property", p.get(O + "key"), p.get(O + "type"), p.get(O + "userConfigurable"), repr(p.get(O + "value")), p.find("ovf:Label", ns).text)
os_ = vs.find("ovf:OperatingSystemSection", ns)
print("os", os_.get(O + "id"), os_.get(V + "osType"))
hw = vs.find("ovf:VirtualHardwareSection", ns)
print("transport", hw.get(O + "transport"))
print("type", hw.find("ovf:System/vssd:VirtualSystemType", ns).text)
for item in hw.findall("ovf:Item", ns):
    get = lambda k: (item.find("rasd:" + k, ns).text if item.find("rasd:" + k, ns) is not None else "-")
    print("item", get("InstanceID"), get("ResourceType"), get("ResourceSubType"), get("VirtualQuantity"),
          get("Parent"), get("HostResource"), get("Connection"), get("Address"), get("AddressOnParent"))
for c in hw.findall("vmw:Config", ns):
    print("config", c.get(V + "key"), c.get(V + "value"))
for c in hw.findall("vmw:ExtraConfig", ns):
    print("extra", c.get(V + "key"), c.get(V + "value"))
print("firmware", [c.get(V + "key") for c in root.iter() if c.get(V + "key") == "firmware"])
"#;
    run_ok(common::python().arg("-c").arg(SCRIPT).arg(ovf))
}

/// `tar tvf` of the OVA (UTC times) and its members unpacked by tar into `dir`.
fn untar(ova: &Path, dir: &Path) -> String {
    let listing = run_ok(Command::new("tar").env("TZ", "UTC").arg("tvf").arg(ova));
    run_ok(Command::new("tar").arg("xf").arg(ova).arg("-C").arg(dir));
    listing
}

#[test]
fn vmware_ova_is_judged_by_tar_qemu_img_xml_and_sha256sum() {
    let scratch = tempfile::tempdir().unwrap();
    let built = demo_build("vmware").run();
    assert_eq!(built.name(), "vmware-amd64.ova");
    let unpacked = scratch.path().join("ova");
    std::fs::create_dir(&unpacked).unwrap();
    let listing = untar(&built.artifact, &unpacked);

    // Three members, in order, root-owned, mode 0644, stamped with the build epoch.
    let vmdk = unpacked.join("disk.vmdk");
    let vmdk_size = std::fs::metadata(&vmdk).unwrap().len();
    let ovf_size = std::fs::metadata(unpacked.join("disk.ovf")).unwrap().len();
    let lines: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 3, "{listing}");
    for (line, (name, size)) in lines.iter().zip([
        ("disk.ovf", ovf_size),
        ("disk.mf", 167),
        ("disk.vmdk", vmdk_size),
    ]) {
        assert_eq!(
            line,
            &[
                "-rw-r--r--",
                "0/0",
                &size.to_string(),
                "2023-11-14",
                "22:13",
                name
            ],
            "{listing}"
        );
    }

    // qemu-img: a stream-optimized, compressed VMDK, consistent, the size of the disk.
    let info = qemu_info(&vmdk, "vmdk");
    assert_eq!(info["virtual-size"], 8589934592u64, "{info}");
    let data = &info["format-specific"]["data"];
    assert_eq!(data["create-type"], "streamOptimized", "{info}");
    assert_eq!(data["parent-cid"], 0xffffffffu64, "{info}");
    assert_eq!(data["extents"][0]["compressed"], true, "{info}");
    assert_eq!(data["extents"][0]["cluster-size"], 65536, "{info}");
    let check = run_ok(
        Command::new(require_tool("qemu-img"))
            .args(["check", "-f", "vmdk"])
            .arg(&vmdk),
    );
    assert!(check.contains("No errors were found"), "{check}");
    // Zero grains are not stored: the demo disk is a few MiB of data in 8 GiB.
    assert!(vmdk_size < 64 << 20, "{vmdk_size}");

    // Back to raw: our own raw image of the same profile, byte for byte.
    let raw_profile = profile(
        scratch.path(),
        "vmware-raw",
        "vmware",
        None,
        "    diskFormat: raw\n",
    );
    let raw = demo_build(&raw_profile).run();
    assert_eq!(raw.name(), "vmware-amd64.raw");
    assert_converts_back(&vmdk, "vmdk", &raw.artifact, scratch.path());

    // sha256sum agrees with disk.mf.
    let sums = run_ok(
        Command::new(require_tool("sha256sum"))
            .args(["disk.vmdk", "disk.ovf"])
            .current_dir(&unpacked),
    );
    let expected: String = sums
        .lines()
        .map(|l| {
            let (sum, name) = l.split_once("  ").unwrap();
            format!("SHA256({name})= {sum}\n")
        })
        .collect();
    assert_eq!(
        std::fs::read_to_string(unpacked.join("disk.mf")).unwrap(),
        expected
    );

    // The OVF, as an XML parser reads it.
    let values = ovf_values(&unpacked.join("disk.ovf"));
    let expected = format!(
        "file disk.vmdk file1 {vmdk_size}
disk 8192 byte * 2^20 vmdisk1 file1 http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized
network VM Network
system vm talos
property talos.config string true '' Talos config data
os 101 other3xLinux64Guest
transport com.vmware.guestInfo
type vmx-15
item 1 3 - 2 - - - - -
item 2 4 - 2048 - - - - -
item 3 6 VirtualSCSI - - - - 0 -
item 4 17 - - 3 ovf:/disk/vmdisk1 - - 0
item 5 10 VmxNet3 - - - VM Network - 2
item 6 24 - - - - - - -
item 7 1 vmware.vmci - - - - - -
config tools.syncTimeWithHost false
config tools.afterPowerOn true
config tools.afterResume true
config tools.beforeGuestShutdown true
config tools.beforeGuestStandby true
config tools.toolsUpgradePolicy manual
config powerOpInfo.suspendType soft
extra nvram talos.nvram
firmware []
"
    );
    assert_eq!(values, expected);
}

#[test]
fn vmware_ova_from_1_12_enables_disk_uuids() {
    let scratch = tempfile::tempdir().unwrap();
    let p = profile(scratch.path(), "v112", "vmware", Some("v1.12.0"), "");
    let built = demo_build(&p).run();
    let unpacked = scratch.path().join("ova");
    std::fs::create_dir(&unpacked).unwrap();
    untar(&built.artifact, &unpacked);
    let values = ovf_values(&unpacked.join("disk.ovf"));
    let extra: Vec<&str> = values.lines().filter(|l| l.starts_with("extra")).collect();
    assert_eq!(
        extra,
        ["extra nvram talos.nvram", "extra disk.EnableUUID true"]
    );
    let size = built.manifest["profile"]["output"]["imageOptions"]["diskSize"]
        .as_u64()
        .unwrap();
    assert!(values.contains(&format!("disk {} byte * 2^20", size >> 20)));
}

/// Same bytes from two builds, on one core and on every core; the sparse 8 GiB disk
/// converts in seconds (holes are neither read nor compressed).
#[test]
fn vmware_ova_is_reproducible_on_one_or_two_cores_and_fast_on_a_sparse_disk() {
    let start = Instant::now();
    let one = demo_build("vmware").run();
    let elapsed = start.elapsed();
    assert!(
        elapsed.as_secs() < 30,
        "{elapsed:?} for an 8 GiB sparse disk"
    );
    let two = demo_build("vmware").run();
    assert!(one.bytes() == two.bytes(), "two builds give the same OVA");

    // The same build pinned to one CPU: available_parallelism() sees one core.
    let pinned = tempfile::tempdir().unwrap();
    let cmd = demo_build("vmware").out(pinned.path()).command();
    let mut taskset = Command::new(require_tool("taskset"));
    taskset
        .args(["-c", "0"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => taskset.env(k, v),
            None => taskset.env_remove(k),
        };
    }
    let out = taskset.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let single = std::fs::read(pinned.path().join("vmware-amd64.ova")).unwrap();
    assert!(single == one.bytes(), "one core gives the same OVA");
}

#[test]
fn alibabacloud_is_a_qcow2_with_8k_clusters_that_converts_back() {
    let scratch = tempfile::tempdir().unwrap();
    let built = demo_build("alibabacloud").run();
    assert_eq!(built.name(), "alibabacloud-amd64.qcow2");
    let info = qemu_info(&built.artifact, "qcow2");
    assert_eq!(info["cluster-size"], 8192, "{info}");
    let check = run_ok(
        Command::new(require_tool("qemu-img"))
            .args(["check", "-f", "qcow2"])
            .arg(&built.artifact),
    );
    assert!(check.contains("No errors were found"), "{check}");
    let raw_profile = profile(
        scratch.path(),
        "ali-raw",
        "alibabacloud",
        None,
        "    diskFormat: raw\n",
    );
    let raw = demo_build(&raw_profile).run();
    assert_eq!(raw.name(), "alibabacloud-amd64.raw");
    let raw_size = std::fs::metadata(&raw.artifact).unwrap().len();
    assert_eq!(info["virtual-size"], raw_size);
    assert_converts_back(&built.artifact, "qcow2", &raw.artifact, scratch.path());
}

#[test]
fn unknown_disk_format_options_fail_in_one_line() {
    let scratch = tempfile::tempdir().unwrap();
    let cases = [
        (
            "alibabacloud",
            "    diskFormatOptions: cluster_size=8k,preallocation=full\n",
            r#"output.imageOptions.diskFormatOptions "cluster_size=8k,preallocation=full": unknown qcow2 option "preallocation""#,
        ),
        (
            "alibabacloud",
            "    diskFormatOptions: cluster_size=12k\n",
            "cluster_size must be a power of two",
        ),
        (
            "vmware",
            "    diskFormatOptions: subformat=streamOptimized\n",
            r#"unknown ova option "subformat""#,
        ),
        (
            "azure",
            "    diskFormatOptions: subformat=dynamic\n",
            "this imager writes fixed VHDs",
        ),
    ];
    for (i, (base, image, needle)) in cases.iter().enumerate() {
        let p = profile(scratch.path(), &format!("bad{i}"), base, None, image);
        let failed = demo_build(&p).no_console().run_err();
        assert_eq!(failed.error_lines().len(), 1, "{}", failed.stderr);
        let line = failed.error_line();
        assert!(line.contains(needle), "{needle}: {line}");
        assert_ne!(failed.code, Some(0));
        assert_eq!(failed.left(), Vec::<String>::new(), "nothing left");
    }
}

/// The disk inside the OVA is what VMware starts: no firmware key in the OVF, so BIOS.
/// SeaBIOS boots the stream-optimized `disk.vmdk` itself (QEMU's vmdk driver decompresses
/// its grains): GRUB from the MBR and BIOS partition, the kernel and initramfs from BOOT.
#[test]
fn boot_the_ova_disk_on_seabios() {
    use common::boot::{Media, SecureBoot, boot};
    let scratch = tempfile::tempdir().unwrap();
    let built = demo_build("vmware")
        .args(["--extra-kernel-arg", "no_timer_check"])
        .run();
    let unpacked = scratch.path().join("ova");
    std::fs::create_dir(&unpacked).unwrap();
    untar(&built.artifact, &unpacked);
    let log = boot(
        Media::Vmdk(unpacked.join("disk.vmdk")),
        SecureBoot::Bios,
        false,
        150,
    );
    assert!(
        log.marker,
        "SeaBIOS -> GRUB -> kernel -> /init from disk.vmdk; log {}",
        log.path.display()
    );
}
