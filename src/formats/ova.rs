//! VMware OVA appliances: a tar of `disk.ovf` (the OVF 1.0 descriptor of a small
//! virtual machine), `disk.mf` (SHA-256 of the other two) and `disk.vmdk` (the raw image
//! as a stream-optimized VMDK, [`super::vmdk`]), in that order, the order vSphere reads
//! them in. The OVF carries the values of Talos's template (`pkg/imager/ova`): hardware
//! family vmx-15, 2 vCPUs, 2 GiB, a paravirtual SCSI disk, a VMXNET3 NIC on "VM Network",
//! the `talos.config` property delivered through guestinfo, and no firmware setting (BIOS).
//!
//! Reproducible: the VMDK's identifiers come from its content and the tar headers are
//! fixed ([`crate::io::tar`]: root, mode 0644, the build epoch). The VMDK is written
//! straight into its place in the tar (its size and hash, which the OVF and the manifest
//! in front of it need, only change bytes whose length is known beforehand), then read
//! back once for its SHA-256; the members in front are written last.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

const BLOCK: u64 = 512;

/// What the OVF says beyond the disk.
#[derive(Debug, Clone, Copy)]
pub struct OvaSpec {
    /// `disk.EnableUUID=true` in the VM's extra config (Talos >= 1.12).
    pub enable_uuid: bool,
    /// mtime of the tar members.
    pub epoch: u64,
    /// Threads compressing VMDK grains.
    pub threads: usize,
}

/// Writes the OVA of the raw image at `raw` to `dest` (opened for reading and writing,
/// at `dest_path`). `scratch` is where the VMDK is built when it cannot be written in
/// place (see [`write_with`]); it is removed afterwards.
pub fn write(
    raw: &Path,
    scratch: &Path,
    spec: &OvaSpec,
    dest: &File,
    dest_path: &Path,
) -> Result<()> {
    write_with(raw, scratch, spec, dest, dest_path, None)
}

/// The OVA, laid out as `[ovf header][ovf][mf header][mf][vmdk header][vmdk][end]`.
///
/// The VMDK's place depends only on the OVF's length rounded up to a tar block, and the
/// OVF's length only on the digits of the VMDK's size. When every size the VMDK can have
/// gives the same number of blocks (always, short of contrived disk sizes), the VMDK is
/// written straight into its place in the tar, then hashed by reading it back once.
/// Otherwise it is built in `scratch` and copied into place, hashed on the way.
/// `force_scratch` picks the route (tests); `None` decides as above.
fn write_with(
    raw: &Path,
    scratch: &Path,
    spec: &OvaSpec,
    dest: &File,
    dest_path: &Path,
    force_scratch: Option<bool>,
) -> Result<()> {
    let disk_size = std::fs::metadata(raw).at(raw)?.len();
    let ovf_for = |vmdk_size| ovf(vmdk_size, disk_size, spec.enable_uuid);
    // The VMDK's offset once the OVF is known: four header/data blocks besides the OVF.
    let vmdk_at = |ovf: &str| (ovf.len() as u64).next_multiple_of(BLOCK) + 4 * BLOCK;
    let (least, most) = super::vmdk::size_bounds(disk_size);
    let in_place = vmdk_at(&ovf_for(least)) == vmdk_at(&ovf_for(most));
    dest.set_len(0).writing(dest_path)?;

    let (vmdk_size, vmdk_sha) = if !force_scratch.unwrap_or(!in_place) {
        let at = vmdk_at(&ovf_for(least));
        let w = super::vmdk::convert(raw, dest, at, spec.threads)
            .map_err(|e| e.at_output(dest_path))?;
        (w.size, hash_region(dest, dest_path, at, w.size, None)?)
    } else {
        let vmdk = crate::io::create_rw(scratch)?;
        crate::io::cleanup::register(scratch);
        let result = super::vmdk::convert(raw, &vmdk, 0, spec.threads)
            .map_err(|e| e.at_output(scratch))
            .and_then(|w| {
                let at = vmdk_at(&ovf_for(w.size));
                let sha = hash_region(&vmdk, scratch, 0, w.size, Some((dest, dest_path, at)))?;
                Ok((w.size, sha))
            });
        drop(vmdk);
        let _ = std::fs::remove_file(scratch);
        crate::io::cleanup::unregister(scratch);
        result?
    };

    let ovf = ovf_for(vmdk_size);
    let ovf_sha = hex::encode(Sha256::digest(ovf.as_bytes()));
    let mf = manifest(&hex::encode(vmdk_sha), &ovf_sha);
    let mut front = Vec::new();
    for (name, data) in [("disk.ovf", ovf.as_bytes()), ("disk.mf", mf.as_bytes())] {
        member(&mut front, name, data.len() as u64, spec.epoch);
        front.extend_from_slice(data);
        front.resize((front.len() as u64).next_multiple_of(BLOCK) as usize, 0);
    }
    member(&mut front, "disk.vmdk", vmdk_size, spec.epoch);
    debug_assert_eq!(front.len() as u64, vmdk_at(&ovf));
    dest.write_all_at(&front, 0).writing(dest_path)?;
    // The VMDK is whole sectors, so no padding; then the end of the archive: two zero blocks.
    let end = front.len() as u64 + vmdk_size;
    dest.write_all_at(&[0u8; 2 * BLOCK as usize], end)
        .writing(dest_path)?;
    Ok(())
}

/// SHA-256 of `len` bytes of `file` (at `path`) from `at`, read once; with `copy_to`,
/// the same bytes are written to that file at that offset on the way.
fn hash_region(
    file: &File,
    path: &Path,
    at: u64,
    len: u64,
    copy_to: Option<(&File, &Path, u64)>,
) -> Result<[u8; 32]> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; crate::io::BUFFER_SIZE];
    let mut done = 0u64;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        file.read_exact_at(&mut buf[..n], at + done).reading(path)?;
        hash.update(&buf[..n]);
        if let Some((to, to_path, to_at)) = copy_to {
            to.write_all_at(&buf[..n], to_at + done).writing(to_path)?;
        }
        done += n as u64;
    }
    Ok(hash.finalize().into())
}

/// Appends the header block of a member `name` of `size` bytes.
fn member(out: &mut Vec<u8>, name: &str, size: u64, epoch: u64) {
    let mut h = crate::io::tar::file_header(size, 0o644, epoch);
    h.set_path(name).expect("member names are short and ASCII");
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

/// `disk.mf`: the SHA-256 of the VMDK, then of the OVF (hex), as ovftool writes it.
fn manifest(vmdk_sha: &str, ovf_sha: &str) -> String {
    format!("SHA256(disk.vmdk)= {vmdk_sha}\nSHA256(disk.ovf)= {ovf_sha}\n")
}

/// `vmw:Config` entries of the hardware section: VMware Tools behaviour.
const TOOLS_CONFIG: &[(&str, &str)] = &[
    ("tools.syncTimeWithHost", "false"),
    ("tools.afterPowerOn", "true"),
    ("tools.afterResume", "true"),
    ("tools.beforeGuestShutdown", "true"),
    ("tools.beforeGuestStandby", "true"),
    ("tools.toolsUpgradePolicy", "manual"),
    ("powerOpInfo.suspendType", "soft"),
];

/// The OVF descriptor of a VMDK of `vmdk_size` bytes holding a disk of `disk_size` bytes.
pub fn ovf(vmdk_size: u64, disk_size: u64, enable_uuid: bool) -> String {
    let capacity = disk_size >> 20;
    let config = |key: &str, value: &str, indent: &str, element: &str| {
        format!(
            "{indent}<vmw:{element} ovf:required=\"false\" vmw:key=\"{key}\" vmw:value=\"{value}\"/>\n"
        )
    };
    let mut extra = String::new();
    for (key, value) in TOOLS_CONFIG {
        extra += &config(key, value, "      ", "Config");
    }
    extra += &config("nvram", "talos.nvram", "      ", "ExtraConfig");
    if enable_uuid {
        extra += &config("disk.EnableUUID", "true", "      ", "ExtraConfig");
    }
    let nic: String = [
        ("slotInfo.pciSlotNumber", "32"),
        ("wakeOnLanEnabled", "false"),
        ("connectable.allowGuestControl", "false"),
    ]
    .iter()
    .map(|(k, v)| config(k, v, "        ", "Config"))
    .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by VMware ovftool 4.3.0 (build-7948156), UTC time: 2019-10-31T01:41:10.540841Z-->
<!-- Edited by Talos -->
<Envelope vmw:buildId="build-7948156" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="disk.vmdk" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <Name>talos</Name>
    <ProductSection ovf:required="false">
      <Info>Talos Virtual Appliance</Info>
      <Property ovf:userConfigurable="true" ovf:type="string"
                ovf:key="talos.config" ovf:value="">
        <Label>Talos config data</Label>
        <Description>Inline Talos config</Description>
      </Property>
    </ProductSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="other3xLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo">
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>talos</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>scsiController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>2</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;VM Network&quot;</rasd:Description>
        <rasd:ElementName>ethernet0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
{nic}      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>video</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>vmci</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.vmci</rasd:ResourceSubType>
        <rasd:ResourceType>1</rasd:ResourceType>
      </Item>
{extra}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_length_does_not_depend_on_the_hashes() {
        let a = manifest(&"0".repeat(64), &"f".repeat(64));
        assert_eq!(a.len(), manifest(&"9".repeat(64), &"a".repeat(64)).len());
        assert!(a.starts_with("SHA256(disk.vmdk)= 000"));
        assert!(a.ends_with('\n') && a.lines().count() == 2);
    }

    #[test]
    fn ovf_has_the_sizes_and_the_uuid_setting_by_version() {
        let old = ovf(123456, 8 << 30, false);
        assert!(old.contains(r#"ovf:size="123456""#));
        assert!(old.contains(r#"ovf:capacity="8192""#));
        assert!(!old.contains("disk.EnableUUID"));
        let new = ovf(123456, 8 << 30, true);
        assert!(new.contains(r#"vmw:key="disk.EnableUUID" vmw:value="true""#));
        assert!(new.find("talos.nvram").unwrap() < new.find("disk.EnableUUID").unwrap());
    }

    #[test]
    fn tar_members_are_in_order_and_the_manifest_is_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let f = File::create(&raw).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all_at(b"boot sector", 0).unwrap();
        drop(f);
        let spec = OvaSpec {
            enable_uuid: true,
            epoch: 1_700_000_000,
            threads: 2,
        };
        let build = |scratch: Option<bool>| {
            let out_path = dir.path().join("x.ova");
            let out = crate::io::create_rw(&out_path).unwrap();
            // Leftovers of an earlier file are cut off.
            out.write_all_at(&[1u8; 8 << 20], 0).unwrap();
            let vmdk = dir.path().join("disk.vmdk");
            write_with(&raw, &vmdk, &spec, &out, &out_path, scratch).unwrap();
            assert!(!vmdk.exists(), "scratch VMDK removed");
            std::fs::read(&out_path).unwrap()
        };
        let bytes = build(None);
        assert!(
            bytes == build(Some(true)),
            "in place or through scratch: same bytes"
        );
        assert!(bytes == build(Some(false)));
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut members = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
            assert_eq!(e.header().mode().unwrap(), 0o644);
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            members.push((name, data));
        }
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["disk.ovf", "disk.mf", "disk.vmdk"]);
        let mf = String::from_utf8(members[1].1.clone()).unwrap();
        assert_eq!(
            mf,
            manifest(
                &hex::encode(Sha256::digest(&members[2].1)),
                &hex::encode(Sha256::digest(&members[0].1))
            )
        );
        let ovf_text = String::from_utf8(members[0].1.clone()).unwrap();
        assert!(ovf_text.contains(&format!(r#"ovf:size="{}""#, members[2].1.len())));
        assert!(ovf_text.contains(r#"ovf:capacity="4""#));
    }
}
