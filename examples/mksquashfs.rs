//! Writes a directory as a system extension squashfs image with the Talos flags, for
//! timing the writer beside `mksquashfs` (`scripts/bench` does):
//! `mksquashfs DIR OUT [--xz] [--threads N]` under `SOURCE_DATE_EPOCH` (default 0).

use std::path::PathBuf;

use imager::formats::squashfs::{Compression, Options, Xattrs, write_tree_with};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: mksquashfs DIR OUT [--xz] [--threads N]");
    };
    let mut options = Options {
        compression: Compression::Zstd18,
        epoch: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(0),
        threads: None,
        uncompressed: false,
    };
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--xz") => options.compression = Compression::Xz,
            Some("--threads") => {
                let n = args.next().and_then(|n| n.into_string().ok());
                options.threads = Some(n.unwrap_or_default().parse()?);
            }
            _ => anyhow::bail!("unknown argument {a:?}"),
        }
    }
    write_tree_with(
        &PathBuf::from(dir),
        &PathBuf::from(out),
        &Xattrs::new(),
        &options,
    )?;
    Ok(())
}
