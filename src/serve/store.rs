//! The shared state of every replica, kept in an ordinary OCI registry (so replicas
//! stay stateless and scale out without a cluster of their own):
//!
//! - `<prefix>/schematics`: each schematic as a blob whose digest is `sha256:<ID>`
//!   (media type `application/vnd.sidero.dev-image.schematic`), kept alive by a
//!   one-layer image tagged `<ID>`, as Image Factory stores them;
//! - `<prefix>/cache`: each built asset as the single layer of an image tagged with
//!   its cache key. The tag is pushed last, after the registry has checked the
//!   blob's digest, so an entry is visible only when complete; two replicas that
//!   build the same asset push the same bytes and the same manifest (builds are
//!   reproducible), so the race needs no lock;
//! - `<prefix>/<image>/<schematic>:<version>`: installer images (an index per tag).
//!
//! With a cache signing key (`--cache-signing-key-path`), cache entries and installer
//! indexes are pushed by digest, signed in the legacy cosign format (tag
//! `sha256-<hex>.sig`, as Image Factory's `internal/image/signer/key.go` does), and
//! only then tagged; a cache entry whose signature does not verify with that key is
//! a cache miss.
//!
//! Everything here is blocking (the registry client is); callers run it off the
//! async runtime.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder,
};

use super::config::RegistryTarget;
use crate::error::{Error, IoContext, Result};
use crate::io::sha256_digest;
use crate::oci::document_bytes;
use crate::oci::registry::{BlobReader, Session};

/// Media type of a stored schematic (Image Factory's).
pub const SCHEMATIC_MEDIA_TYPE: &str = "application/vnd.sidero.dev-image.schematic";
/// Media type of a cached asset layer: raw bytes, uncompressed.
const ASSET_MEDIA_TYPE: &str = "application/data";
/// The config blob of the one-layer images (an empty JSON object).
const EMPTY_CONFIG: &[u8] = b"{}";
/// Manifests the store reads are small; anything bigger is refused.
const SMALL: u64 = 4 << 20;

/// A cached asset: its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAsset {
    pub digest: String,
    pub size: u64,
}

/// The registry-backed store.
pub struct Store {
    session: Session,
    target: RegistryTarget,
    /// Signs cache entries and installer indexes; verifies cache entries on read.
    signing_key: Option<crate::cosign::SigningKey>,
}

fn descriptor(media: MediaType, digest: &str, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media)
        .digest(digest.parse::<Digest>().expect("sha256 digests parse"))
        .size(size)
        .build()
        .expect("all descriptor fields are set")
}

fn registry_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Dependency(format!("{what}: {e}"))
}

impl Store {
    pub fn new(
        target: RegistryTarget,
        insecure: bool,
        credentials: Option<crate::oci::auth::Credentials>,
    ) -> Result<Store> {
        Ok(Store {
            session: Session::with_credentials(&target.host, insecure, credentials)?,
            target,
            signing_key: None,
        })
    }

    /// This store signing what it pushes to the cache and installers with `key`.
    pub fn signed_with(mut self, key: Option<crate::cosign::SigningKey>) -> Store {
        self.signing_key = key;
        self
    }

    /// The PEM public key of the cache signing key, if any (`/oci/cosign/signing-key.pub`).
    pub fn signing_key_pem(&self) -> Option<String> {
        self.signing_key.as_ref().map(|k| k.public.to_pem())
    }

    /// Signs manifest `digest` of `repo` (no-op without a signing key).
    fn sign(&self, repo: &str, digest: &str) -> Result<()> {
        let Some(key) = &self.signing_key else {
            return Ok(());
        };
        let reference = format!("{}/{repo}", self.session.host());
        crate::cosign::sign_and_push(&self.session, repo, &reference, digest, key)
    }

    /// Whether manifest `digest` of `repo` carries a legacy signature by the signing key
    /// (true without a key).
    fn signature_verifies(&self, repo: &str, digest: &str) -> bool {
        let Some(key) = &self.signing_key else {
            return true;
        };
        let source = crate::cosign::RegistrySource {
            session: &self.session,
            repo,
        };
        let policy = [crate::cosign::Policy::PublicKey(key.public.clone())];
        match crate::cosign::verify(&source, digest, &policy) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(repo, digest, reason = %e, "cache entry signature invalid: treated as a cache miss");
                false
            }
        }
    }

    /// The registry session (for redirects and the installer frontend).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Full repository name under the prefix.
    pub fn repo(&self, name: &str) -> String {
        self.target.repo(name)
    }

    /// Whether the registry answers its API root.
    pub fn ping(&self) -> bool {
        self.session
            .head_manifest(&self.repo("schematics"), "ping")
            .is_ok()
    }

    /// Pushes `layer` (already in `repo`) as the single layer of an image tagged `tag`.
    fn push_one_layer(
        &self,
        repo: &str,
        tag: &str,
        layer: Descriptor,
        title: Option<&str>,
    ) -> Result<()> {
        let config = self.session.push_blob_bytes(repo, EMPTY_CONFIG)?;
        let mut builder = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config,
                EMPTY_CONFIG.len() as u64,
            ))
            .layers(vec![layer]);
        if let Some(title) = title {
            builder = builder.annotations(HashMap::from([(
                "org.opencontainers.image.title".to_string(),
                title.to_string(),
            )]));
        }
        let manifest = builder.build().expect("all manifest fields are set");
        let bytes = document_bytes(&manifest);
        if self.signing_key.is_some() && repo == self.repo("cache") {
            // By digest, signed, then tagged: a tagged entry always has its signature.
            let digest = self.session.put_manifest(
                repo,
                &sha256_digest(&bytes),
                MediaType::ImageManifest.as_ref(),
                &bytes,
            )?;
            self.sign(repo, &digest)?;
        }
        self.session
            .put_manifest(repo, tag, MediaType::ImageManifest.as_ref(), &bytes)?;
        Ok(())
    }

    /// Stores the canonical bytes of schematic `id`; false when it was there already.
    pub fn put_schematic(&self, id: &str, canonical: &[u8]) -> Result<bool> {
        retrying(|| self.put_schematic_once(id, canonical))
    }

    fn put_schematic_once(&self, id: &str, canonical: &[u8]) -> Result<bool> {
        let repo = self.repo("schematics");
        let digest = format!("sha256:{id}");
        debug_assert_eq!(sha256_digest(canonical), digest);
        if self.session.blob_size(&repo, &digest)?.is_some()
            && self.session.head_manifest(&repo, id)?.is_some()
        {
            return Ok(false);
        }
        self.session
            .push_blob(&repo, &digest, canonical.len() as u64, &mut &canonical[..])?;
        let layer = descriptor(
            MediaType::Other(SCHEMATIC_MEDIA_TYPE.into()),
            &digest,
            canonical.len() as u64,
        );
        self.push_one_layer(&repo, id, layer, None)?;
        Ok(true)
    }

    /// The canonical bytes of schematic `id` (64 lower-case hex digits), if stored.
    pub fn schematic(&self, id: &str) -> Result<Option<Vec<u8>>> {
        if id.len() != 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Ok(None);
        }
        self.session
            .read_blob(&self.repo("schematics"), &format!("sha256:{id}"), 1 << 20)
    }

    /// The cache entry tagged `key`, if complete.
    pub fn cached_asset(&self, key: &str) -> Result<Option<CachedAsset>> {
        let repo = self.repo("cache");
        let Some(m) = self.session.manifest(&repo, key)? else {
            return Ok(None);
        };
        if !self.signature_verifies(&repo, &m.digest) {
            return Ok(None);
        }
        let manifest: ImageManifest = serde_json::from_slice(&m.bytes)
            .map_err(|e| registry_error(&format!("cache entry {key}"), e))?;
        let [layer] = manifest.layers().as_slice() else {
            return Err(registry_error(
                &format!("cache entry {key}"),
                "not a one-layer image",
            ));
        };
        Ok(Some(CachedAsset {
            digest: layer.digest().to_string(),
            size: layer.size(),
        }))
    }

    /// Opens a cached asset's layer.
    pub fn open_asset(&self, asset: &CachedAsset) -> Result<Option<BlobReader>> {
        self.session.open_blob(&self.repo("cache"), &asset.digest)
    }

    /// Stores the built file at `path` (`size` bytes, `digest`) as cache entry `key`.
    pub fn put_asset(
        &self,
        key: &str,
        path: &Path,
        asset: &CachedAsset,
        title: &str,
    ) -> Result<()> {
        retrying(|| self.put_asset_once(key, path, asset, title))
    }

    fn put_asset_once(
        &self,
        key: &str,
        path: &Path,
        asset: &CachedAsset,
        title: &str,
    ) -> Result<()> {
        let repo = self.repo("cache");
        let mut file = std::fs::File::open(path).at(path)?;
        self.session
            .push_blob(&repo, &asset.digest, asset.size, &mut file)?;
        let layer = descriptor(
            MediaType::Other(ASSET_MEDIA_TYPE.into()),
            &asset.digest,
            asset.size,
        );
        self.push_one_layer(&repo, key, layer, Some(title))
    }

    /// The digest of installer manifest `repo:tag`, if pushed.
    pub fn installer_digest(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        Ok(self.session.head_manifest(repo, tag)?.map(|(d, _, _)| d))
    }

    /// Pushes the image of an installer tarball (an OCI archive of one image) into
    /// `repo`; returns its manifest's descriptor with the platform `linux/<arch>`.
    pub fn push_installer_archive(
        &self,
        repo: &str,
        tarball: &Path,
        arch: &str,
    ) -> Result<Descriptor> {
        retrying(|| self.push_installer_archive_once(repo, tarball, arch))
    }

    fn push_installer_archive_once(
        &self,
        repo: &str,
        tarball: &Path,
        arch: &str,
    ) -> Result<Descriptor> {
        let what = format!("installer archive {}", tarball.display());
        // Pass 1: index.json and the small JSON blobs (manifest, config).
        let mut small: HashMap<String, Vec<u8>> = HashMap::new();
        let mut index: Option<ImageIndex> = None;
        for_each_entry(tarball, |name, size, entry| {
            if name == "index.json" {
                let mut b = Vec::new();
                entry.take(SMALL).read_to_end(&mut b).at(tarball)?;
                index = Some(serde_json::from_slice(&b).map_err(|e| registry_error(&what, e))?);
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/")
                && size < 64 << 10
            {
                let mut b = Vec::new();
                entry.read_to_end(&mut b).at(tarball)?;
                small.insert(format!("sha256:{hex}"), b);
            }
            Ok(())
        })?;
        let index = index.ok_or_else(|| registry_error(&what, "no index.json"))?;
        let entry = index
            .manifests()
            .first()
            .ok_or_else(|| registry_error(&what, "an empty index"))?
            .clone();
        let manifest_bytes = small
            .get(&entry.digest().to_string())
            .ok_or_else(|| registry_error(&what, "the manifest blob is missing"))?
            .clone();
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| registry_error(&what, e))?;
        let mut wanted: HashMap<String, u64> = manifest
            .layers()
            .iter()
            .chain([manifest.config()])
            .map(|d| (d.digest().to_string(), d.size()))
            .collect();
        // Pass 2: every blob the manifest names, streamed from the tar.
        for_each_entry(tarball, |name, size, entry| {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let digest = format!("sha256:{hex}");
                if wanted.remove(&digest).is_some() {
                    self.session.push_blob(repo, &digest, size, entry)?;
                }
            }
            Ok(())
        })?;
        if let Some(missing) = wanted.keys().next() {
            return Err(registry_error(&what, format!("blob {missing} is missing")));
        }
        let digest = self.session.put_manifest(
            repo,
            &sha256_digest(&manifest_bytes),
            MediaType::ImageManifest.as_ref(),
            &manifest_bytes,
        )?;
        let mut d = descriptor(
            MediaType::ImageManifest,
            &digest,
            manifest_bytes.len() as u64,
        );
        let arch = match arch {
            "arm64" => Arch::ARM64,
            _ => Arch::Amd64,
        };
        d.set_platform(Some(
            PlatformBuilder::default()
                .architecture(arch)
                .os(Os::Linux)
                .build()
                .expect("platform fields are set"),
        ));
        Ok(d)
    }

    /// Pushes an index of `manifests` to `repo` by digest, then tags it `tag` (the
    /// tag last: it marks the installer complete). Returns the index digest.
    pub fn push_installer_index(
        &self,
        repo: &str,
        tag: &str,
        manifests: Vec<Descriptor>,
    ) -> Result<String> {
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .expect("all index fields are set");
        let bytes = document_bytes(&index);
        let media = MediaType::ImageIndex;
        retrying(|| {
            let digest =
                self.session
                    .put_manifest(repo, &sha256_digest(&bytes), media.as_ref(), &bytes)?;
            self.sign(repo, &digest)?;
            self.session
                .put_manifest(repo, tag, media.as_ref(), &bytes)?;
            Ok(digest)
        })
    }
}

/// Attempts of a push before its error is final.
const PUSH_ATTEMPTS: u32 = 5;

/// Runs push `op` again (after 25 ms, 100, 400, 1600, with jitter) when the registry
/// fails it. A registry on file-system storage (CNCF distribution, Debian's
/// `docker-registry`) fails pushes that race with another push of the same blob — the
/// `{}` config every image here shares, the layers two replicas push at once — with a
/// 500 on the blob or BLOB_UNKNOWN / DIGEST_INVALID on the manifest until the other
/// commit lands. Every push here is idempotent (a blob the registry has is not sent
/// again, a manifest is the same bytes), so a later attempt finds the blob whole.
/// Local I/O errors are final at once.
fn retrying<T>(mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let mut delay_ms = 25u64;
    let mut attempt = 1;
    loop {
        match op() {
            Err(Error::Dependency(m)) if attempt < PUSH_ATTEMPTS => {
                tracing::debug!(attempt, error = %m, "registry push failed; trying again");
                let jitter = getrandom::u64().unwrap_or(0) % delay_ms.max(1);
                std::thread::sleep(std::time::Duration::from_millis(delay_ms + jitter));
                delay_ms *= 4;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Calls `f(name, size, entry)` for each regular file of the tar at `path`.
fn for_each_entry(
    path: &Path,
    mut f: impl FnMut(&str, u64, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).at(path)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive.entries().at(path)? {
        let mut entry = entry.at(path)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .at(path)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let size = entry.size();
        f(&name, size, &mut entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_failures_are_tried_again_and_local_ones_are_not() {
        let mut calls = 0;
        let got = retrying(|| {
            calls += 1;
            if calls < 3 {
                Err(Error::Dependency("HTTP 500".into()))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.unwrap(), 3);

        let mut calls = 0;
        let got: Result<()> = retrying(|| {
            calls += 1;
            Err(Error::Dependency("BLOB_UNKNOWN".into()))
        });
        assert!(matches!(got, Err(Error::Dependency(_))));
        assert_eq!(calls, PUSH_ATTEMPTS);

        let mut calls = 0;
        let got: Result<()> = retrying(|| {
            calls += 1;
            Err(Error::io_op(
                "reading",
                Path::new("asset"),
                std::io::Error::other("gone"),
            ))
        });
        assert!(got.is_err());
        assert_eq!(calls, 1);
    }
}
