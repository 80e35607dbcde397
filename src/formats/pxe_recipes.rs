//! PXE recipes: an iPXE script and a Matchbox profile that boot the PXE assets
//! (kernel, initramfs, command line) as they are written to the output directory.

use serde_json::json;

/// The PXE assets of one build, by file name, plus the command line.
#[derive(Debug, Clone)]
pub struct PxeAssets {
    pub kernel: String,
    pub initramfs: String,
    pub cmdline: String,
}

/// An iPXE script. `base_url` is the directory holding the assets (empty = relative
/// to the script, which works for TFTP and HTTP alike); a `/` joins it to the asset
/// names unless it already ends in one. The `initrd=` argument names the initramfs so
/// EFI-stub kernels find it.
pub fn ipxe_script(assets: &PxeAssets, base_url: &str) -> String {
    let base_url = directory_url(base_url);
    format!(
        "#!ipxe\n\
         kernel {base_url}{kernel} initrd={initramfs} {cmdline}\n\
         initrd {base_url}{initramfs}\n\
         boot\n",
        kernel = assets.kernel,
        initramfs = assets.initramfs,
        cmdline = assets.cmdline,
    )
}

/// `base` as a directory prefix: `http://h/assets` and `http://h/assets/` both give
/// `http://h/assets/`; empty stays empty (names relative to the script).
pub fn directory_url(base: &str) -> String {
    match base {
        "" => String::new(),
        b if b.ends_with('/') => b.to_string(),
        b => format!("{b}/"),
    }
}

/// A Matchbox profile (`/var/lib/matchbox/profiles/<id>.json`) with the assets under
/// `/assets/` as the Talos docs lay them out.
pub fn matchbox_profile(id: &str, assets: &PxeAssets) -> serde_json::Value {
    let mut args = vec![format!("initrd={}", assets.initramfs)];
    args.extend(assets.cmdline.split_whitespace().map(str::to_string));
    json!({
        "id": id,
        "name": id,
        "boot": {
            "kernel": format!("/assets/{}", assets.kernel),
            "initrd": [format!("/assets/{}", assets.initramfs)],
            "args": args,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> PxeAssets {
        PxeAssets {
            kernel: "kernel-amd64".into(),
            initramfs: "initramfs-metal-amd64.xz".into(),
            cmdline:
                "talos.platform=metal slab_nomerge pti=on talos.config=http://m/assets/worker.yaml"
                    .into(),
        }
    }

    #[test]
    fn ipxe_boots_kernel_with_initrd() {
        let s = ipxe_script(&assets(), "http://10.0.0.1/");
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("kernel http://10.0.0.1/kernel-amd64 initrd=initramfs-metal-amd64.xz talos.platform=metal"));
        assert!(s.contains("\ninitrd http://10.0.0.1/initramfs-metal-amd64.xz\nboot\n"));
    }

    #[test]
    fn base_url_without_a_trailing_slash_is_joined_with_one() {
        for base in ["http://10.0.0.1/assets", "http://10.0.0.1/assets/"] {
            let s = ipxe_script(&assets(), base);
            assert!(
                s.contains("kernel http://10.0.0.1/assets/kernel-amd64 ")
                    && s.contains("initrd http://10.0.0.1/assets/initramfs-metal-amd64.xz\n"),
                "{s}"
            );
        }
        assert!(ipxe_script(&assets(), "").contains("kernel kernel-amd64 "));
    }

    #[test]
    fn matchbox_profile_has_the_documented_shape() {
        let p = matchbox_profile("worker", &assets());
        assert_eq!(p["boot"]["kernel"], "/assets/kernel-amd64");
        assert_eq!(p["boot"]["initrd"][0], "/assets/initramfs-metal-amd64.xz");
        assert_eq!(p["boot"]["args"][0], "initrd=initramfs-metal-amd64.xz");
        assert_eq!(
            p["boot"]["args"].as_array().unwrap().last().unwrap(),
            "talos.config=http://m/assets/worker.yaml"
        );
    }
}
