//! `GET /pxe/:id/:version/<platform>-<arch>[-secureboot]`: the iPXE script Image
//! Factory serves (`internal/frontend/http/standard.ipxe`, `secureboot.ipxe`), byte
//! for byte: the kernel and initramfs (or, for SecureBoot, the signed UKI) from this
//! service's `/image/` URLs, with the `cmdline-<path>` asset's command line.

use axum::extract::{Path, State as Extract};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::paths::{self, AssetKind, AssetPath};
use super::routes::load_customization;
use super::{AppState, ServeError, assets};
use crate::profile::OutFormat;

/// The script text.
pub fn render(
    base: &str,
    id: &str,
    version: &str,
    platform: &str,
    arch: &str,
    secureboot: bool,
    cmdline: &str,
) -> String {
    let prefix = format!("{base}/image/{id}/{version}");
    if secureboot {
        format!(
            "#!ipxe\n\nimgfree\nkernel {prefix}/{platform}-{arch}-secureboot-uki.efi {cmdline}\nboot\n"
        )
    } else {
        format!(
            "#!ipxe\n\nimgfree\nkernel {prefix}/kernel-{arch} {cmdline}\ninitrd {prefix}/initramfs-{arch}.xz\nboot\n"
        )
    }
}

pub async fn script(
    Extract(state): Extract<AppState>,
    Path((id, version, path)): Path<(String, String, String)>,
) -> Result<Response, ServeError> {
    let custom = load_customization(&state, &id).await?;
    let version = state.prepared_version(&version).await?;
    let (platform, arch, secureboot) =
        paths::parse_platform_arch(&path).map_err(ServeError::bad_request)?;
    let request = AssetPath {
        kind: AssetKind::Cmdline,
        platform: platform.clone(),
        arch,
        secureboot,
        out_format: OutFormat::Raw,
    };
    let s = state.clone();
    let (i, v) = (id.clone(), version.clone());
    // The command line is part of the plan: nothing to build. The initramfs the script
    // names must be buildable too: every extension of the schematic exists for the
    // version (else the script would fail at boot on a 400).
    let planned = tokio::task::spawn_blocking(move || {
        for name in &custom.extensions {
            if s.inputs.extension(&v, name)?.is_none() {
                return Err(ServeError::bad_request(format!(
                    "official extension {name:?} is not available for Talos version {v}"
                )));
            }
        }
        assets::plan(&s, &i, &custom, &v, &request)
    })
    .await
    .map_err(|e| ServeError::internal(e.to_string()))??;
    let text = render(
        &state.config.external_url,
        &id,
        &version,
        &platform,
        arch.as_str(),
        secureboot,
        &planned.plan.cmdline,
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn factory_script_bytes() {
        assert_eq!(
            super::render("http://f", "ID", "v1.9.2", "metal", "amd64", false, "a b"),
            "#!ipxe\n\nimgfree\nkernel http://f/image/ID/v1.9.2/kernel-amd64 a b\ninitrd http://f/image/ID/v1.9.2/initramfs-amd64.xz\nboot\n"
        );
        assert_eq!(
            super::render("http://f", "ID", "v1.9.2", "metal", "amd64", true, "a"),
            "#!ipxe\n\nimgfree\nkernel http://f/image/ID/v1.9.2/metal-amd64-secureboot-uki.efi a\nboot\n"
        );
    }
}
