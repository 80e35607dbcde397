//! Writes a directory as an ext4 filesystem image the way the IMAGECACHE partition is
//! made, for timing the writer beside `mkfs.ext4 -d` (`scripts/bench` does):
//! `mkext4 DIR OUT SIZE_MIB [--block-size N]` under `SOURCE_DATE_EPOCH` (default 0),
//! label `IMAGECACHE`, UUID and hash seed Talos's IMAGECACHE partition GUID.

use std::path::PathBuf;

use imager::formats::ext4::{Ext4Options, write};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), Some(out), Some(size)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: mkext4 DIR OUT SIZE_MIB [--block-size N]");
    };
    let size: u64 = size.to_str().unwrap_or_default().parse::<u64>()? << 20;
    let mut block_size = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--block-size") => {
                let n = args.next().and_then(|n| n.into_string().ok());
                block_size = Some(n.unwrap_or_default().parse()?);
            }
            _ => anyhow::bail!("unknown argument {a:?}"),
        }
    }
    let guid = uuid::Uuid::parse_str("3b5449bc-c21f-8009-8b51-18945967f8df")?;
    let opts = Ext4Options {
        label: "IMAGECACHE".into(),
        uuid: guid,
        hash_seed: guid,
        epoch: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(0),
        block_size,
    };
    let out = PathBuf::from(out);
    let file = std::fs::File::create(&out)?;
    write(&file, 0, size, &opts, &PathBuf::from(dir))?;
    Ok(())
}
