//! Base images for the installer output and the OCI documents around them.
//!
//! A base image is named by a [`Reference`]: an OCI image layout directory
//! (`oci:DIR[:TAG]`, profile `ociPath`), an OCI archive (`oci-archive:PATH[:TAG]`), a
//! docker archive (`docker-archive:PATH`) or a registry. Blobs are located, not
//! loaded: each is read as a stream when the output is written, and its digest is
//! checked on the way.
//!
//! Indexes and manifests are `oci_spec` types. A base image's config stays a
//! `serde_json::Value`: `oci_spec`'s `ImageConfiguration` has no place for fields
//! outside the OCI spec (docker's `container_config`, `docker_version`, ...), and the
//! installer's config is the base's with a layer added, every other field unchanged.

pub mod auth;
pub mod reference;
pub mod registry;
pub mod source;
pub mod tls;

pub use reference::{Reference, RegistryRef};
pub use source::{BaseImage, Blob};

/// Opens the base image `reference` for `arch`; registry pulls use plain HTTP when
/// `insecure`.
pub fn open_base(reference: &str, arch: &str, insecure: bool) -> crate::error::Result<BaseImage> {
    Reference::parse(reference)?.open(arch, insecure)
}

/// JSON of an OCI document as the installer image stores it: compact, object keys
/// sorted at every level. `oci_spec` types serialize their fields in declaration
/// order; going through `serde_json::Value` (whose maps are sorted, `preserve_order`
/// being off) gives the sorted form, so digests of the documents stay the same for
/// the same content whichever way a document was built.
pub fn document_bytes(doc: &impl serde::Serialize) -> Vec<u8> {
    let value = serde_json::to_value(doc).expect("OCI documents serialize");
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

/// `text` cut to one line of at most 120 characters, for quoting input in errors.
pub(crate) fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(120).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_sorted_keys() {
        use oci_spec::image::{Descriptor, MediaType};
        let d = Descriptor::new(
            MediaType::ImageConfig,
            3,
            crate::io::sha256_digest(b"abc")
                .parse::<oci_spec::image::Digest>()
                .unwrap(),
        );
        assert_eq!(
            String::from_utf8(document_bytes(&d)).unwrap(),
            format!(
                r#"{{"digest":"{}","mediaType":"application/vnd.oci.image.config.v1+json","size":3}}"#,
                crate::io::sha256_digest(b"abc")
            )
        );
    }

    #[test]
    fn one_line_quotes() {
        assert_eq!(one_line("short"), "short");
        assert_eq!(one_line("a\nb"), "a…");
        assert_eq!(one_line(&"x".repeat(500)).chars().count(), 121);
    }
}
