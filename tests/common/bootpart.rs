//! The GRUB layouts' partitions read back by independent tools: a partition copied out
//! of the image (sparse), XFS judged by xfsprogs (`xfs_repair -n`, `xfs_db`), files read
//! through GRUB's own file system code (`grub-fstest` on the whole image, so GRUB's GPT
//! parser finds BOOT as `gpt3` just as at boot), and `sgdisk -p` as rows.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use super::{require_tool, run_ok};

/// Copies `len` bytes at `at` of `image` into `dest`, leaving zero MiBs as holes.
pub fn extract(image: &Path, at: u64, len: u64, dest: &Path) {
    let mut from = File::open(image).unwrap();
    from.seek(SeekFrom::Start(at)).unwrap();
    let mut to = File::create(dest).unwrap();
    to.set_len(len).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        from.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            to.seek(SeekFrom::Start(done)).unwrap();
            to.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
}

/// `len` bytes at `at` of `image`.
pub fn read_range(image: &Path, at: u64, len: u64) -> Vec<u8> {
    let mut f = File::open(image).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// `xfs_repair -n` (no modification): panics unless it exits 0; returns its output.
pub fn xfs_repair_clean(part: &Path) -> String {
    let o = Command::new(require_tool("xfs_repair"))
        .args(["-n", "-f"])
        .arg(part)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "xfs_repair -n {}: {text}",
        part.display()
    );
    text
}

/// `xfs_db -r -c CMD1 -c CMD2 ...` on `part` (a partition or filesystem image); its stdout.
pub fn xfs_db(part: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new(require_tool("xfs_db"));
    c.arg("-r");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run_ok(c.arg(part))
}

/// The file `path` of partition `gpt` of the disk image, as GRUB reads it.
pub fn grub_read(image: &Path, gpt: u32, path: &str, scratch: &Path) -> Vec<u8> {
    let local = scratch.join(format!("grub-read-{}", path.replace('/', "_")));
    run_ok(
        Command::new(require_tool("grub-fstest"))
            .arg(image)
            .arg("cp")
            .arg(format!("(loop0,gpt{gpt}){path}"))
            .arg(&local),
    );
    std::fs::read(&local).unwrap()
}

/// `sgdisk -p` partition rows: (number, first LBA, last LBA, type code, name).
pub fn sgdisk_rows(image: &Path) -> Vec<(u32, u64, u64, String, String)> {
    let print = run_ok(Command::new(require_tool("sgdisk")).arg("-p").arg(image));
    print
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Number Start End Size(2 fields) Code Name
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[5].to_string(),
                f[6..].join(" "),
            )
        })
        .collect()
}
