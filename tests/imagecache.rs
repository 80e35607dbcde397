//! The image cache input (`--image-cache`, `input.imageCache`) in ISOs and disk
//! images: the ISO's `imagecache/` tree read back by xorriso with Rock Ridge, the
//! disk's IMAGECACHE partition judged by sgdisk, e2fsck, dumpe2fs and debugfs, and a
//! registryd-style lookup (tag → digest → manifest → config and layers) written here
//! that serves every cached image from what was read back.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{demo_build, pseudo_random, require_tool, run_ok, sha256_hex};

const MIB: u64 = 1024 * 1024;
const GUID: &str = "3B5449BC-C21F-8009-8B51-18945967F8DF";

/// The images in the cache: (registry dir, repository, tag).
const IMAGES: [(&str, &str, &str); 3] = [
    ("docker.io", "library/busybox", "1.36"),
    ("registry.local_5000_", "org/team/deep/app", "v1.2.3"),
    ("ghcr.io", "siderolabs/flannel", "v0.26.1"),
];

/// A cache tree as `talosctl images cache-create --layout flat` lays it out: for
/// each image, an index for two platforms, their manifests, configs and layers;
/// plus many unrelated blobs so the blob directory spans many blocks.
fn cache_tree(dir: &Path) -> PathBuf {
    let root = dir.join("cache-tree");
    let blob_dir = root.join("blob");
    std::fs::create_dir_all(&blob_dir).unwrap();
    let put_blob = |bytes: &[u8]| -> String {
        let d = sha256_hex(bytes);
        std::fs::write(blob_dir.join(format!("sha256-{d}")), bytes).unwrap();
        d
    };
    for (k, (registry, repo, tag)) in IMAGES.iter().enumerate() {
        let mdir = root.join("manifests").join(registry).join(repo);
        std::fs::create_dir_all(mdir.join("reference")).unwrap();
        std::fs::create_dir_all(mdir.join("digest")).unwrap();
        let mut platform_manifests = Vec::new();
        for (p, arch) in ["amd64", "arm64"].iter().enumerate() {
            let layer = pseudo_random(200_000 + k * 1000, (k * 10 + p) as u64);
            let layer_d = put_blob(&layer);
            let config = format!(
                r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            );
            let config_d = put_blob(config.as_bytes());
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{layer_d}","size":{}}}]}}"#,
                config.len(),
                layer.len()
            );
            let md = sha256_hex(manifest.as_bytes());
            std::fs::write(mdir.join("digest").join(format!("sha256-{md}")), &manifest).unwrap();
            platform_manifests.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
                manifest.len()
            ));
        }
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            platform_manifests.join(",")
        );
        std::fs::write(mdir.join("reference").join(tag), &index).unwrap();
        let id = sha256_hex(index.as_bytes());
        std::fs::write(mdir.join("digest").join(format!("sha256-{id}")), &index).unwrap();
    }
    for i in 0..400u64 {
        put_blob(&pseudo_random((i * 131 % 5000) as usize, 1000 + i));
    }
    root
}

/// A tar of the tree (sorted, owned by 0:0) as `tarballPath` takes it.
fn tar_tree(root: &Path, out: &Path) {
    let mut paths = Vec::new();
    imager::io::walk(root, root, &mut paths).unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for rel in paths {
        let p = root.join(&rel);
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if p.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, &rel, std::io::empty()).unwrap();
        } else {
            let bytes = std::fs::read(&p).unwrap();
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            b.append_data(&mut h, &rel, &bytes[..]).unwrap();
        }
    }
    b.finish().unwrap();
}

/// The tree wrapped as `--layout oci` does: a one-layer image in an OCI layout
/// whose index entry names the platform.
fn oci_layout(root: &Path, dir: &Path, arch: &str) -> PathBuf {
    let layout = dir.join(format!("cache-oci-{arch}"));
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let tar = dir.join("cache.tar");
    tar_tree(root, &tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(&tar).unwrap()).unwrap();
    let layer = gz.finish().unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256_hex(bytes);
        std::fs::write(blobs.join(&d), bytes).unwrap();
        d
    };
    let layer_d = put(&layer);
    let config = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_d = put(config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{layer_d}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let md = put(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(layout.join("index.json"), index).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// registryd's lookup over a cache tree read back from an artifact: every image's
/// tag names an index whose digest file exists, each platform manifest is there,
/// and its config and layers are blobs whose bytes match their names.
fn serve_every_image(root: &Path) {
    let blob = |d: &str| {
        let hex = d.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(root.join("blob").join(format!("sha256-{hex}")))
            .unwrap_or_else(|e| panic!("blob {d}: {e}"));
        assert_eq!(sha256_hex(&bytes), hex, "blob {d} holds other bytes");
        bytes
    };
    for (registry, repo, tag) in IMAGES {
        let mdir = root.join("manifests").join(registry).join(repo);
        let index = std::fs::read(mdir.join("reference").join(tag)).unwrap();
        let by_digest = std::fs::read(
            mdir.join("digest")
                .join(format!("sha256-{}", sha256_hex(&index))),
        )
        .unwrap();
        assert_eq!(index, by_digest);
        let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
        for m in index["manifests"].as_array().unwrap() {
            let d = m["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            let manifest = std::fs::read(mdir.join("digest").join(format!("sha256-{d}"))).unwrap();
            assert_eq!(sha256_hex(&manifest), d);
            let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            blob(manifest["config"]["digest"].as_str().unwrap());
            for l in manifest["layers"].as_array().unwrap() {
                blob(l["digest"].as_str().unwrap());
            }
        }
    }
}

fn profile(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

#[test]
fn iso_carries_the_cache_under_imagecache() {
    let xorriso = require_tool("xorriso");
    let dir = tempfile::tempdir().unwrap();
    let tree = cache_tree(dir.path());
    let layout = oci_layout(&tree, dir.path(), "amd64");
    let built = demo_build("iso").arg("--image-cache").arg(&layout).run();
    let iso = &built.artifact;
    // Rock Ridge names in full (71-character blob names, paths deeper than 8).
    let out = dir.path().join("extracted");
    run_ok(
        Command::new(&xorriso)
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", "/imagecache"])
            .arg(&out),
    );
    run_ok(Command::new("diff").arg("-r").arg(&tree).arg(&out));
    serve_every_image(&out);
    let pvd = run_ok(
        Command::new(&xorriso)
            .args(["-indev"])
            .arg(iso)
            .arg("-pvd_info"),
    );
    assert!(pvd.contains("Volume Id    : TALOS_"), "{pvd}");
}

/// The partition `n` of `image`: (offset, length, sgdisk -i text).
fn part(image: &Path, n: u32) -> (u64, u64, String) {
    common::partition(image, n, 512)
}

fn judge_partition(dir: &Path, image: &Path, n: u32, tree: &Path) -> u64 {
    let (at, len, info) = part(image, n);
    assert!(
        info.contains(&format!("Partition unique GUID: {GUID}")),
        "{info}"
    );
    assert!(info.contains("Partition name: 'IMAGECACHE'"), "{info}");
    assert!(
        info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        "{info}"
    );
    let fs = dir.join(format!("imagecache-{n}.ext4"));
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", image.display()))
            .arg(format!("of={}", fs.display()))
            .args([
                "bs=1M",
                "conv=sparse",
                "status=none",
                "iflag=skip_bytes,count_bytes",
            ])
            .arg(format!("skip={at}"))
            .arg(format!("count={len}")),
    );
    run_ok(Command::new(require_tool("e2fsck")).arg("-fn").arg(&fs));
    let dump = run_ok(Command::new("dumpe2fs").arg("-h").arg(&fs));
    let guid = GUID.to_lowercase();
    for want in [
        "Filesystem volume name:   IMAGECACHE".to_string(),
        format!("Filesystem UUID:          {guid}"),
        format!("Directory Hash Seed:      {guid}"),
    ] {
        assert!(dump.contains(&want), "{want:?}:\n{dump}");
    }
    let out = dir.join(format!("rdump-{n}"));
    std::fs::create_dir(&out).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /blob /manifests {}", out.display()))
            .arg(&fs),
    );
    run_ok(Command::new("diff").arg("-r").arg(tree).arg(&out));
    serve_every_image(&out);
    len
}

fn files_size(root: &Path) -> u64 {
    let mut paths = Vec::new();
    imager::io::walk(root, root, &mut paths).unwrap();
    paths
        .iter()
        .map(|p| std::fs::metadata(root.join(p)).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn disk_image_of_talos_1_13_grows_by_the_cache() {
    require_tool("sgdisk");
    let dir = tempfile::tempdir().unwrap();
    let tree = cache_tree(dir.path());
    let tarball = dir.path().join("cache.tar");
    tar_tree(&tree, &tarball);
    let base = profile(
        dir.path(),
        "plain.yaml",
        "baseProfileName: metal\nversion: v1.13.0\noutput:\n  imageOptions:\n    bootloader: sd-boot\n",
    );
    let plain = demo_build(&base).args(["--out-format", "raw"]).run();
    let plain_size = std::fs::metadata(&plain.artifact).unwrap().len();
    let with = profile(
        dir.path(),
        "cache.yaml",
        &format!(
            "baseProfileName: metal\nversion: v1.13.0\ninput:\n  imageCache:\n    tarballPath: {}\noutput:\n  imageOptions:\n    bootloader: sd-boot\n",
            tarball.display()
        ),
    );
    let built = demo_build(&with).args(["--out-format", "raw"]).run();
    let image = &built.artifact;
    let total = files_size(&tree);
    let want = (total + total * 20 / 100).next_multiple_of(MIB);
    assert_eq!(std::fs::metadata(image).unwrap().len(), plain_size + want);
    assert!(
        built
            .stderr
            .contains("updating image size to accommodate image cache: +")
    );
    let print = run_ok(Command::new("sgdisk").arg("-p").arg(image));
    let last = print.lines().last().unwrap();
    assert!(
        last.trim().starts_with('3') && last.contains("IMAGECACHE"),
        "{print}"
    );
    let (meta_at, meta_len, _) = part(image, 2);
    let (cache_at, _, _) = part(image, 3);
    assert_eq!(cache_at, (meta_at + meta_len).next_multiple_of(MIB));
    assert_eq!(judge_partition(dir.path(), image, 3, &tree), want);
}

#[test]
fn disk_image_of_talos_1_12_fills_the_remaining_space() {
    let dir = tempfile::tempdir().unwrap();
    let tree = cache_tree(dir.path());
    let layout = oci_layout(&tree, dir.path(), "amd64");
    let with = profile(
        dir.path(),
        "cache.yaml",
        "baseProfileName: metal\nversion: v1.12.0\noutput:\n  imageOptions:\n    bootloader: sd-boot\n    diskSize: 3221225472\n",
    );
    let built = demo_build(&with)
        .args(["--out-format", "raw", "--image-cache"])
        .arg(&layout)
        .run();
    let image = &built.artifact;
    // The disk keeps its size (diskSize as Talos adjusts it for the boot partitions).
    let size = std::fs::metadata(image).unwrap().len();
    assert_eq!(size, 3221225472 + 1000 * MIB);
    assert!(!built.stderr.contains("updating image size"));
    let (meta_at, meta_len, _) = part(image, 2);
    let len = judge_partition(dir.path(), image, 3, &tree);
    assert_eq!(
        meta_at + meta_len + len,
        size - MIB,
        "to the end but the GPT tail"
    );

    // The cache for the other architecture is refused, and nothing is left.
    let arm = oci_layout(&tree, dir.path(), "arm64");
    let out = dir.path().join("out-arm");
    let failed = demo_build(&with)
        .out(&out)
        .args(["--out-format", "raw", "--image-cache"])
        .arg(&arm)
        .run_err();
    assert!(
        failed.stderr.contains("the cache is for arm64, not amd64"),
        "{}",
        failed.stderr
    );
    assert!(std::fs::read_dir(&out).map_or(true, |d| d.count() == 0));

    // A diskSize that leaves nothing after META (2104 MiB once Talos adds its 1000 MiB
    // for the boot partitions): one line, nothing left.
    let full = profile(
        dir.path(),
        "full.yaml",
        "baseProfileName: metal\nversion: v1.12.0\noutput:\n  imageOptions:\n    bootloader: sd-boot\n    diskSize: 1157627904\n",
    );
    let out = dir.path().join("out-full");
    let failed = demo_build(&full)
        .out(&out)
        .args(["--out-format", "raw", "--image-cache"])
        .arg(&layout)
        .run_err();
    assert!(
        failed.stderr.contains("leaves no room for the image cache"),
        "{}",
        failed.stderr
    );
    assert!(std::fs::read_dir(&out).map_or(true, |d| d.count() == 0));
}

#[test]
fn a_blob_named_for_another_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tree = cache_tree(dir.path());
    let first = std::fs::read_dir(tree.join("blob"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::write(first.path(), b"tampered").unwrap();
    let tarball = dir.path().join("cache.tar");
    tar_tree(&tree, &tarball);
    let with = profile(
        dir.path(),
        "cache.yaml",
        &format!(
            "baseProfileName: metal\ninput:\n  imageCache:\n    tarballPath: {}\noutput:\n  imageOptions:\n    bootloader: sd-boot\n",
            tarball.display()
        ),
    );
    let failed = demo_build(&with).args(["--out-format", "raw"]).run_err();
    assert!(
        failed.stderr.contains("holds bytes of digest sha256:"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        failed
            .stderr
            .trim()
            .lines()
            .filter(|l| l.contains("error"))
            .count(),
        1,
        "{}",
        failed.stderr
    );
}

/// A two-platform image as an OCI layout (an index of two manifests, tagged `v1`).
fn multi_arch_layout(dir: &Path, seed: u64) -> PathBuf {
    let layout = dir.join(format!("image-{seed}"));
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256_hex(bytes);
        std::fs::write(blobs.join(&d), bytes).unwrap();
        d
    };
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let tar = common::tar_of(&[(
            &format!("{arch}-{seed}.bin"),
            0o644,
            pseudo_random(30_000, seed),
        )]);
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        let layer_d = put(&layer);
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
            sha256_hex(&tar)
        );
        let config_d = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{layer_d}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let md = put(manifest.as_bytes());
        children.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            manifest.len()
        ));
    }
    let inner = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        children.join(",")
    );
    let id = put(inner.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{id}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
        inner.len()
    );
    std::fs::write(layout.join("index.json"), index).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// Every file name under `dir` (recursively), as `sha256:<hex>` for blob names.
fn digests(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut paths = Vec::new();
    imager::io::walk(dir, dir, &mut paths).unwrap();
    paths
        .iter()
        .filter(|p| dir.join(p).is_file())
        .filter_map(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            let hex = n
                .strip_prefix("sha256-")
                .map(str::to_string)
                .or_else(|| (n.len() == 64 && p.starts_with("blobs")).then_some(n.clone()))?;
            Some(format!("sha256:{hex}"))
        })
        .collect()
}

#[test]
fn cache_create_pulls_what_skopeo_pulls_and_refuses_a_bad_blob() {
    let skopeo = require_tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = common::registry::registry(d);
    let refs: Vec<String> = ["org/app:v1", "org/team/deep/tool:2.0"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let layout = multi_arch_layout(d, k as u64 + 1);
            let r = format!("127.0.0.1:{}/{name}", reg.1);
            run_ok(
                Command::new(&skopeo)
                    .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
                    .arg(format!("oci:{}:v1", layout.display()))
                    .arg(format!("docker://{r}")),
            );
            r
        })
        .collect();
    let list = d.join("images.txt");
    std::fs::write(
        &list,
        format!("# the cluster's images\n{}\n", refs.join("\n")),
    )
    .unwrap();
    let out = d.join("cache");
    run_ok(
        common::imager()
            .args([
                "cache",
                "create",
                "--insecure",
                "--platform",
                "linux/amd64,linux/arm64",
            ])
            .arg("--images")
            .arg(&list)
            .arg("--output")
            .arg(&out),
    );
    // The same blobs and manifests as skopeo copies of every image (all platforms).
    let mut want = std::collections::BTreeSet::new();
    for (k, r) in refs.iter().enumerate() {
        let sk = d.join(format!("skopeo-{k}"));
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--quiet", "--all", "--src-tls-verify=false"])
                .arg(format!("docker://{r}"))
                .arg(format!("oci:{}:x", sk.display())),
        );
        want.extend(digests(&sk));
    }
    assert_eq!(digests(&out), want);
    let port_dir = format!("127.0.0.1_{}_", reg.1);
    assert!(
        out.join("manifests")
            .join(&port_dir)
            .join("org/app/reference/v1")
            .is_file()
    );
    assert!(
        out.join("manifests")
            .join(&port_dir)
            .join("org/team/deep/tool/reference/2.0")
            .is_file()
    );

    // As an OCI layout for amd64, it goes into an ISO (tested above for a made tree).
    let layout = d.join("cache-oci");
    run_ok(
        common::imager()
            .args(["cache", "create", "--insecure", "--images", "-", "--output"])
            .arg(format!("oci:{}", layout.display()))
            .stdin(std::fs::File::open(&list).unwrap()),
    );
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(index.contains(r#""architecture":"amd64""#), "{index}");

    // A registry serving other bytes for a layer: refused, nothing written.
    let blob_root = d.join("registry-data/docker/registry/v2/blobs/sha256");
    let mut tampered = false;
    for entry in walkdir(&blob_root) {
        if entry.ends_with("data") && std::fs::metadata(&entry).unwrap().len() > 1000 {
            let mut bytes = std::fs::read(&entry).unwrap();
            bytes[500] ^= 0xFF;
            std::fs::write(&entry, bytes).unwrap();
            tampered = true;
            break;
        }
    }
    assert!(tampered);
    let bad = d.join("bad.tar");
    let failed = common::imager()
        .args([
            "cache",
            "create",
            "--insecure",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .arg("--images")
        .arg(&list)
        .arg("--output")
        .arg(format!("tar:{}", bad.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(stderr.contains("downloaded with digest"), "{stderr}");
    assert!(!bad.exists());
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    imager::io::walk(dir, dir, &mut paths).unwrap();
    paths.into_iter().map(|p| dir.join(p)).collect()
}

/// A guest finds the cache as Talos does and reads a blob back: the ISO by its
/// `TALOS_` volume label (`imagecache/` in it), the disk's ext4 by its `IMAGECACHE`
/// label (the demo `/init` does this when `imager.imagecache` is on the command line).
#[test]
fn boot_finds_the_cache_on_the_iso_and_in_the_disk_image() {
    use common::boot::{Media, SecureBoot, boot};
    let dir = tempfile::tempdir().unwrap();
    let tree = cache_tree(dir.path());
    let layout = oci_layout(&tree, dir.path(), "amd64");
    let iso = demo_build("iso")
        .args(["--extra-kernel-arg", "imager.imagecache", "--image-cache"])
        .arg(&layout)
        .run();
    let log = boot(
        Media::Cdrom(iso.artifact.clone()),
        SecureBoot::Off,
        false,
        300,
    );
    assert!(log.marker, "log {}", log.path.display());
    assert!(
        log.text.contains("imagecache-blob-ok: TALOS_"),
        "the guest did not read the ISO's cache; log {}",
        log.path.display()
    );
    let disk = profile(
        dir.path(),
        "disk.yaml",
        "baseProfileName: metal\nversion: v1.13.0\noutput:\n  imageOptions:\n    bootloader: sd-boot\n",
    );
    let image = demo_build(&disk)
        .args([
            "--out-format",
            "raw",
            "--extra-kernel-arg",
            "imager.imagecache",
            "--image-cache",
        ])
        .arg(&layout)
        .run();
    let log = boot(
        Media::Disk(image.artifact.clone()),
        SecureBoot::Off,
        false,
        300,
    );
    assert!(log.marker, "log {}", log.path.display());
    assert!(
        log.text.contains("imagecache-blob-ok: IMAGECACHE sha256-"),
        "the guest did not read the partition's cache; log {}",
        log.path.display()
    );
}

/// metal-4k (4096-byte sectors): the ext4 gets 4 KiB blocks, as Talos passes the sector
/// size to mkfs.ext4; the image is the same bytes built on one core.
#[test]
fn metal_4k_cache_has_4k_blocks_and_the_same_bytes_on_one_core() {
    let dir = tempfile::tempdir().unwrap();
    let tree = cache_tree(dir.path());
    // Talos's size rule (files + 20%) leaves room for the small files' 4 KiB blocks
    // when most of the cache is large layers, as real caches are.
    let big = pseudo_random(20 << 20, 77);
    std::fs::write(
        tree.join("blob")
            .join(format!("sha256-{}", sha256_hex(&big))),
        &big,
    )
    .unwrap();
    let layout = oci_layout(&tree, dir.path(), "amd64");
    let p = profile(
        dir.path(),
        "4k.yaml",
        "baseProfileName: metal-4k\nversion: v1.13.0\noutput:\n  imageOptions:\n    bootloader: sd-boot\n",
    );
    let build = |single: bool| {
        let b = demo_build(&p)
            .out(&dir.path().join(format!("out-{single}")))
            .args(["--out-format", "raw", "--image-cache"])
            .arg(&layout);
        if single { b.single_core() } else { b }.run()
    };
    let a = build(false);
    let b = build(true);
    let bytes = std::fs::read(&a.artifact).unwrap();
    assert!(
        bytes == std::fs::read(&b.artifact).unwrap(),
        "not reproducible"
    );
    // The third GPT entry (4096-byte LBAs): IMAGECACHE.
    let entries = u64::from_le_bytes(bytes[4096 + 72..4096 + 80].try_into().unwrap()) as usize;
    let e = &bytes[entries * 4096 + 2 * 128..entries * 4096 + 3 * 128];
    let first = u64::from_le_bytes(e[32..40].try_into().unwrap()) as usize;
    let last = u64::from_le_bytes(e[40..48].try_into().unwrap()) as usize;
    let name: String = e[56..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&c| c != 0)
        .map(|c| char::from_u32(u32::from(c)).unwrap())
        .collect();
    assert_eq!(name, "IMAGECACHE");
    let fs = dir.path().join("fs");
    std::fs::write(&fs, &bytes[first * 4096..(last + 1) * 4096]).unwrap();
    run_ok(Command::new(require_tool("e2fsck")).arg("-fn").arg(&fs));
    let dump = run_ok(Command::new("dumpe2fs").arg("-h").arg(&fs));
    assert!(dump.contains("Block size:               4096"), "{dump}");
}
