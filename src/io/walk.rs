//! A reproducible walk of a directory tree, for archive writers (squashfs, cpio).

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Appends the entries of `dir`, as paths relative to `root`, to `out`: pre-order, the
/// names of each directory byte-sorted, symlinks not followed (reproducible archives).
pub fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .at(dir)?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        out.push(path.strip_prefix(root).expect("inside root").to_path_buf());
        if std::fs::symlink_metadata(&path).at(&path)?.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_order_byte_sorted_without_following_symlinks() {
        let dir = std::env::temp_dir().join(format!("imager-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b/d")).unwrap();
        std::fs::write(dir.join("a"), "").unwrap();
        std::fs::write(dir.join("b/c"), "").unwrap();
        std::fs::write(dir.join("B"), "").unwrap();
        std::os::unix::fs::symlink("b", dir.join("l")).unwrap();
        let mut out = Vec::new();
        walk(&dir, &dir, &mut out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = out
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["B", "a", "b", "b/c", "b/d", "l"]);
    }
}
