//! One way for the tests to build from the demo inputs: `demo_build(profile)`, then options,
//! then `run()` (must succeed; the artifact is found from the build manifest), `run_err()`
//! (must fail) or `output()` (either way).
//!
//! Defaults: `SOURCE_DATE_EPOCH=1700000000`, `--arch amd64`, `--install-dir` the demo
//! inputs, `IMAGER_GRUB_DIR` the demo GRUB files ([`super::grub_dir`]), `--extra-kernel-arg console=ttyS0` (`console=ttyAMA0` for `--arch arm64`: the boot
//! harness reads the serial console) and a fresh output directory `out` in a temporary
//! directory the result owns.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use super::{demo_dir, imager};

/// `SOURCE_DATE_EPOCH` of a build unless the test picks another.
pub const EPOCH: u64 = 1_700_000_000;

/// A build of `profile` (a built-in name, a profile file, or `-` for stdin) from the demo inputs.
pub fn demo_build(profile: impl AsRef<OsStr>) -> DemoBuild {
    DemoBuild {
        subcommand: None,
        profile: profile.as_ref().to_owned(),
        install_dir: Some(demo_dir()),
        arch: Some("amd64".into()),
        console: true,
        epoch: Some(EPOCH),
        keys: None,
        out: None,
        args: Vec::new(),
        envs: Vec::new(),
        single_core: false,
    }
}

/// The options of one build; see [`demo_build`].
#[derive(Debug)]
pub struct DemoBuild {
    subcommand: Option<OsString>,
    profile: OsString,
    install_dir: Option<PathBuf>,
    arch: Option<String>,
    console: bool,
    epoch: Option<u64>,
    keys: Option<PathBuf>,
    out: Option<PathBuf>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    single_core: bool,
}

impl DemoBuild {
    /// Runs `imager SUBCOMMAND PROFILE ...` (e.g. `pxe`) instead of `imager PROFILE ...`.
    pub fn subcommand(mut self, name: &str) -> Self {
        self.subcommand = Some(name.into());
        self
    }

    /// SecureBoot keys (`--secureboot-dir`).
    pub fn keys(mut self, dir: &Path) -> Self {
        self.keys = Some(dir.to_path_buf());
        self
    }

    /// `SOURCE_DATE_EPOCH` (default [`EPOCH`]).
    pub fn epoch(mut self, seconds: u64) -> Self {
        self.epoch = Some(seconds);
        self
    }

    /// No `SOURCE_DATE_EPOCH`: the build stamps the current time.
    pub fn no_epoch(mut self) -> Self {
        self.epoch = None;
        self
    }

    /// Inputs from `dir` (`--install-dir`) instead of the demo inputs.
    pub fn install_dir(mut self, dir: &Path) -> Self {
        self.install_dir = Some(dir.to_path_buf());
        self
    }

    /// No `--install-dir`: the profile's own input paths.
    pub fn no_install_dir(mut self) -> Self {
        self.install_dir = None;
        self
    }

    /// `--arch` (default `amd64`).
    pub fn arch(mut self, arch: &str) -> Self {
        self.arch = Some(arch.into());
        self
    }

    /// No `--arch`: the profile's or the host's.
    pub fn no_arch(mut self) -> Self {
        self.arch = None;
        self
    }

    /// No `--extra-kernel-arg console=ttyS0` (`ttyAMA0`): the profile's command line as it is.
    pub fn no_console(mut self) -> Self {
        self.console = false;
        self
    }

    /// The output directory (default: `out` in a temporary directory the result owns).
    pub fn out(mut self, dir: &Path) -> Self {
        self.out = Some(dir.to_path_buf());
        self
    }

    /// One more command-line argument, after the defaults.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More command-line arguments, after the defaults.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the build pinned to one CPU (`taskset -c 0`: the affinity mask a one-CPU
    /// cpuset gives, with no thread-count variable), for reproducibility checks against
    /// a build on every core.
    pub fn single_core(mut self) -> Self {
        self.single_core = true;
        self
    }

    /// An environment variable for the build.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The command line without `--output`.
    fn base_command(&self) -> Command {
        let mut cmd = if self.single_core {
            let mut c = Command::new(super::require_tool("taskset"));
            c.args(["-c", "0"]).arg(imager().get_program());
            c
        } else {
            imager()
        };
        if let Some(epoch) = self.epoch {
            cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
        cmd.env("IMAGER_GRUB_DIR", super::grub_dir());
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(sub) = &self.subcommand {
            cmd.arg(sub);
        }
        cmd.arg(&self.profile);
        if let Some(arch) = &self.arch {
            cmd.args(["--arch", arch]);
        }
        if self.console {
            let serial = match self.arch.as_deref() {
                Some("arm64") => "console=ttyAMA0",
                _ => "console=ttyS0",
            };
            cmd.args(["--extra-kernel-arg", serial]);
        }
        if let Some(dir) = &self.install_dir {
            cmd.arg("--install-dir").arg(dir);
        }
        if let Some(keys) = &self.keys {
            cmd.arg("--secureboot-dir").arg(keys);
        }
        cmd.args(&self.args);
        cmd
    }

    /// The whole command, to spawn or to run without an output directory (`--tar-to-stdout`);
    /// `--output` only when [`DemoBuild::out`] named one.
    pub fn command(&self) -> Command {
        let mut cmd = self.base_command();
        if let Some(out) = &self.out {
            cmd.arg("--output").arg(out);
        }
        cmd
    }

    /// Runs the build, whatever its outcome; the output directory as [`Ran`] holds it.
    fn ran(self) -> Ran {
        let (out, tmp) = match &self.out {
            Some(out) => (out.clone(), None),
            None => {
                let tmp = tempfile::tempdir().unwrap();
                (tmp.path().join("out"), Some(tmp))
            }
        };
        let before = manifests(&out);
        let mut cmd = self.base_command();
        cmd.arg("--output").arg(&out);
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Ran {
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            what: format!("{cmd:?}"),
            output,
            before,
            out,
            tmp,
        }
    }

    /// Runs the build, whatever its outcome.
    pub fn output(self) -> Output {
        self.ran().output
    }

    /// Runs the build; panics with its stderr unless it succeeds and wrote exactly one
    /// manifest, whose `outputs[0].name` names the artifact beside it.
    pub fn run(self) -> Built {
        let ran = self.ran();
        assert!(
            ran.output.status.success(),
            "{} failed ({}):\n{}",
            ran.what,
            ran.output.status,
            ran.stderr
        );
        let after = manifests(&ran.out);
        let written: Vec<&PathBuf> = after
            .iter()
            .filter(|(path, time)| ran.before.get(*path) != Some(time))
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            written.len(),
            1,
            "{}: one build manifest expected in {}, written: {written:?}",
            ran.what,
            ran.out.display()
        );
        let manifest_path = written[0].clone();
        Built {
            _tmp: ran.tmp,
            ..Built::from_manifest(manifest_path, ran.stderr, ran.output.stdout)
        }
    }

    /// Runs the build; panics unless it fails.
    pub fn run_err(self) -> Failed {
        let ran = self.ran();
        assert!(
            !ran.output.status.success(),
            "{} must fail; stderr:\n{}",
            ran.what,
            ran.stderr
        );
        Failed {
            code: ran.output.status.code(),
            stderr: ran.stderr,
            out: ran.out,
            _tmp: ran.tmp,
        }
    }
}

/// A finished run, before it is judged.
struct Ran {
    output: Output,
    stderr: String,
    what: String,
    before: HashMap<PathBuf, SystemTime>,
    out: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

/// The build manifests in `dir` and when each was last written.
fn manifests(dir: &Path) -> HashMap<PathBuf, SystemTime> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
        .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
        .collect()
}

/// A successful build. A temporary output directory lives as long as this value: keep it
/// while the artifact is in use.
#[derive(Debug)]
pub struct Built {
    /// The artifact, as the manifest names it.
    pub artifact: PathBuf,
    /// The build manifest.
    pub manifest: serde_json::Value,
    /// Where the manifest is: `<artifact>.manifest.json`.
    pub manifest_path: PathBuf,
    /// The progress lines.
    pub stderr: String,
    pub stdout: Vec<u8>,
    /// The output directory.
    pub out: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Built {
    /// The build whose one manifest is in `out` (a build some other way, e.g. in a container).
    pub fn in_dir(out: &Path, stderr: String) -> Built {
        let found: Vec<PathBuf> = manifests(out).into_keys().collect();
        assert_eq!(
            found.len(),
            1,
            "one build manifest expected in {}: {found:?}",
            out.display()
        );
        Built::from_manifest(found[0].clone(), stderr, Vec::new())
    }

    /// The build that wrote `manifest_path`; checks that it names an artifact beside it.
    fn from_manifest(manifest_path: PathBuf, stderr: String, stdout: Vec<u8>) -> Built {
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&manifest_path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest_path.display())),
        )
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", manifest_path.display()));
        let name = manifest["outputs"][0]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("outputs[0].name in {}", manifest_path.display()));
        assert_eq!(
            manifest_path.file_name().unwrap().to_string_lossy(),
            format!("{name}.manifest.json"),
            "the manifest is named after its artifact"
        );
        let out = manifest_path.parent().unwrap().to_path_buf();
        let artifact = out.join(name);
        assert!(
            artifact.is_file(),
            "{} names {}, which is not there",
            manifest_path.display(),
            artifact.display()
        );
        Built {
            artifact,
            manifest,
            manifest_path,
            stderr,
            stdout,
            out,
            _tmp: None,
        }
    }

    /// The artifact's file name.
    pub fn name(&self) -> String {
        self.artifact
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The artifact's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.artifact)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.artifact.display()))
    }
}

/// A failed build.
#[derive(Debug)]
pub struct Failed {
    pub stderr: String,
    /// The exit code (`None` when a signal ended the process).
    pub code: Option<i32>,
    /// The output directory the build was given.
    pub out: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Failed {
    /// The `error:` lines of stderr.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect()
    }

    /// The first `error:` line; panics with stderr when there is none.
    pub fn error_line(&self) -> &str {
        self.error_lines()
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no error line:\n{}", self.stderr))
    }

    /// The whole refusal rule: exit code not 0, one `error:` line containing every one of
    /// `needles` and no panic ([`super::one_error_line`]), nothing left in the output
    /// directory. Returns the line.
    pub fn refused(&self, needles: &[&str], what: &str) -> &str {
        assert_ne!(self.code, Some(0), "{what}: must fail:\n{}", self.stderr);
        let line = super::one_error_line(&self.stderr, needles, what);
        super::assert_nothing_left(&self.out, what);
        line
    }

    /// What the build left in its output directory (nothing, when it cleaned up).
    pub fn left(&self) -> Vec<String> {
        super::entries(&self.out)
    }
}
