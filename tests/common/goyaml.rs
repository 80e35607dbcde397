//! go-yaml v3 as a test oracle: `tests/goyaml_oracle/main.go` built once per test
//! process against Debian's `golang-gopkg-yaml.v3-dev` (see `.ci/run`), and a
//! deterministic generator of strings full of scalars go-yaml treats specially.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Builds the oracle once per test process.
fn binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("goyaml-oracle");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("oracle");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/goyaml_oracle/main.go");
        let st = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", dir.join("cache"))
            .env("GOFLAGS", "-mod=mod")
            .status()
            .expect("go is installed (golang-go)");
        assert!(st.success(), "building the go-yaml oracle failed");
        bin
    })
    .clone()
}

/// go-yaml's answer per body in `mode` (`schematic`: the body is a schematic, the
/// answer `yaml.Marshal` of it; `extensions`: the body is Talos's extensions `Config`
/// as JSON, the answer what the imager's encoder writes): Ok(bytes) or Err(message).
pub fn oracle(mode: &str, bodies: &[Vec<u8>]) -> Vec<Result<String, String>> {
    oracle_at(&binary(), mode, bodies)
}

/// [`oracle`] with another build of `tests/goyaml_oracle/main.go` (go-yaml v4's, to
/// regenerate `tests/data/goyaml-v4`).
pub fn oracle_at(
    bin: &std::path::Path,
    mode: &str,
    bodies: &[Vec<u8>],
) -> Vec<Result<String, String>> {
    let mut child = Command::new(bin)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for b in bodies {
        input.push_str(&hex::encode(b));
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), bodies.len());
    lines
        .into_iter()
        .map(|l| match l.split_once(' ') {
            Some(("ok", h)) => Ok(String::from_utf8(hex::decode(h).unwrap()).unwrap()),
            Some((_, m)) => Err(m.to_string()),
            None => Err(String::new()),
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

pub const PIECES: &[&str] = &[
    "a",
    "x",
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "~",
    "null",
    "true",
    "False",
    "0",
    "1",
    "10",
    "0x1F",
    "0o7",
    "017",
    "08",
    "0b1",
    "1_0",
    "1e3",
    "1e400",
    ".5",
    "-.inf",
    ".NaN",
    "1:30",
    "2024-01-02",
    "2024-1-2T3:04:05Z",
    "2001-12-14 21:59:43.10",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r",
    ":",
    ": ",
    " #",
    "#",
    "-",
    "- ",
    "--- ",
    "...",
    "'",
    "\"",
    "\\",
    ".",
    "e",
    "_",
    "ü",
    "日本",
    "\u{2028}",
    "\u{85}",
    "\u{a0}",
    "\u{feff}",
    "\u{0}",
    "\u{1b}",
    "\u{7f}",
    "{",
    "}",
    "[",
    "]",
    ",",
    "!",
    "&",
    "*",
    "|",
    ">",
    "%",
    "@",
    "`",
    "?",
    "? ",
    "=",
    "ip=dhcp",
    "console=ttyS0,115200n8",
    "a/b:c",
    "+",
    "<<",
    "\u{1F600}",
];

/// A string of up to four [`PIECES`].
pub fn random_string(r: &mut Rng) -> String {
    (0..r.below(5)).map(|_| r.pick(PIECES)).collect()
}
