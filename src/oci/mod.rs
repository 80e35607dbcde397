//! Base images for the installer output: read from an OCI image layout directory
//! (`oci:DIR[:TAG]`, profile `ociPath`), an OCI archive (`oci-archive:PATH[:TAG]`) or a
//! docker archive (`docker-archive:PATH`). Blobs are located, not loaded: each is read
//! as a stream when the output is written, and its digest is checked on the way.
//!
//! JSON documents are handled as `serde_json::Value` so that fields this program does
//! not know (labels, history, annotations of the base) pass through unchanged.

pub mod registry;
pub mod source;

pub use source::{BaseImage, Blob};
