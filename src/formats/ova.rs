//! VMware OVA appliances: a tar of `disk.ovf` (the OVF 1.0 descriptor of a small
//! virtual machine), `disk.mf` (SHA-256 of the other two) and `disk.vmdk` (the raw image
//! as a stream-optimized VMDK, [`super::vmdk`]), in that order, the order vSphere reads
//! them in. The OVF carries the values of Talos's template (`pkg/imager/ova`): hardware
//! family vmx-15, 2 vCPUs, 2 GiB, a paravirtual SCSI disk, a VMXNET3 NIC on "VM Network",
//! the `talos.config` property delivered through guestinfo, and no firmware setting (BIOS).
//!
//! Reproducible: the VMDK's identifiers come from its content and the tar headers are
//! fixed ([`crate::io::tar`]: root, mode 0644, the build epoch). The VMDK is built in
//! scratch space first (its tables sit in front of the grains and its size goes in the
//! OVF); it is then copied into the tar once, hashed on the way, and the manifest, whose
//! length does not depend on the hashes, is filled in behind it.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::io::HashingWriter;

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

/// Writes the OVA of the raw image at `raw` to `dest` (at `dest_path`); the VMDK is
/// built at `scratch` and removed afterwards.
pub fn write(
    raw: &Path,
    scratch: &Path,
    spec: &OvaSpec,
    dest: &mut File,
    dest_path: &Path,
) -> Result<()> {
    let disk_size = std::fs::metadata(raw).at(raw)?.len();
    let vmdk = crate::io::create_rw(scratch)?;
    crate::io::cleanup::register(scratch);
    let written = super::vmdk::convert(raw, &vmdk, spec.threads).map_err(|e| e.at_output(scratch));
    let result = written.and_then(|w| {
        let ovf = ovf(w.size, disk_size, spec.enable_uuid);
        pack(&vmdk, scratch, w.size, &ovf, spec.epoch, dest, dest_path)
    });
    drop(vmdk);
    let _ = std::fs::remove_file(scratch);
    crate::io::cleanup::unregister(scratch);
    result
}

/// The tar: OVF, manifest (a placeholder of its final length, filled in at the end),
/// then the VMDK copied from `vmdk` and hashed as it goes.
fn pack(
    vmdk: &File,
    vmdk_path: &Path,
    vmdk_size: u64,
    ovf: &str,
    epoch: u64,
    dest: &mut File,
    dest_path: &Path,
) -> Result<()> {
    dest.set_len(0).writing(dest_path)?;
    dest.seek(SeekFrom::Start(0)).writing(dest_path)?;
    let ovf_sha = hex::encode(Sha256::digest(ovf.as_bytes()));
    let placeholder = manifest(&"0".repeat(64), &ovf_sha);
    let mut out = std::io::BufWriter::with_capacity(crate::io::BUFFER_SIZE, &mut *dest);
    member(&mut out, "disk.ovf", ovf.len() as u64, epoch).writing(dest_path)?;
    out.write_all(ovf.as_bytes()).writing(dest_path)?;
    pad(&mut out, ovf.len() as u64).writing(dest_path)?;
    let mf_at = 2 * BLOCK + (ovf.len() as u64).next_multiple_of(BLOCK);
    member(&mut out, "disk.mf", placeholder.len() as u64, epoch).writing(dest_path)?;
    out.write_all(placeholder.as_bytes()).writing(dest_path)?;
    pad(&mut out, placeholder.len() as u64).writing(dest_path)?;
    member(&mut out, "disk.vmdk", vmdk_size, epoch).writing(dest_path)?;
    let mut hashing = HashingWriter::new(out);
    let mut from = vmdk;
    from.seek(SeekFrom::Start(0)).reading(vmdk_path)?;
    let copied = crate::io::copy(&mut from, vmdk_path, &mut hashing, dest_path)?;
    let (mut out, vmdk_sha, _) = hashing.finish();
    if copied != vmdk_size {
        return Err(crate::error::Error::io_op(
            "reading",
            vmdk_path,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the VMDK changed size"),
        ));
    }
    pad(&mut out, vmdk_size).writing(dest_path)?;
    // End of archive: two zero blocks.
    out.write_all(&[0u8; 2 * BLOCK as usize])
        .writing(dest_path)?;
    out.flush().writing(dest_path)?;
    drop(out);
    let mf = manifest(&hex::encode(vmdk_sha), &ovf_sha);
    debug_assert_eq!(mf.len(), placeholder.len());
    dest.write_all_at(mf.as_bytes(), mf_at).writing(dest_path)?;
    Ok(())
}

/// The header block of a member `name` of `size` bytes.
fn member(out: &mut impl Write, name: &str, size: u64, epoch: u64) -> std::io::Result<()> {
    let mut h = crate::io::tar::file_header(size, 0o644, epoch);
    h.set_path(name)?;
    h.set_cksum();
    out.write_all(h.as_bytes())
}

/// Zeros up to the next block after `len` bytes of content.
fn pad(out: &mut impl Write, len: u64) -> std::io::Result<()> {
    let n = len.next_multiple_of(BLOCK) - len;
    out.write_all(&[0u8; BLOCK as usize][..n as usize])
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
        let out_path = dir.path().join("x.ova");
        let mut out = crate::io::create_rw(&out_path).unwrap();
        let spec = OvaSpec {
            enable_uuid: true,
            epoch: 1_700_000_000,
            threads: 2,
        };
        write(
            &raw,
            &dir.path().join("disk.vmdk"),
            &spec,
            &mut out,
            &out_path,
        )
        .unwrap();
        assert!(
            !dir.path().join("disk.vmdk").exists(),
            "scratch VMDK removed"
        );
        let bytes = std::fs::read(&out_path).unwrap();
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
