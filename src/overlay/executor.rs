//! Running an overlay installer: the foreign-code boundary of board overlays.
//!
//! The protocol is Talos's `pkg/imager/overlay/executor/executor.go`: `<bin>
//! get-options` or `<bin> install`, a YAML document on stdin, stdout captured (the
//! options YAML for `get-options`), a non-zero exit reported as `failed to run overlay
//! installer: <exit status>, stdErr: <stderr>`.
//!
//! Unlike Talos, which runs the binary with the imager's environment, directory and
//! privileges, the process here is confined (the binary comes from an image, it is
//! someone else's code):
//! - a fresh temporary working directory (also `HOME` and `TMPDIR`), removed afterwards;
//! - a minimal environment (`PATH`, `HOME`, `TMPDIR` only);
//! - a time limit ([`TIMEOUT_ENV`], default [`DEFAULT_TIMEOUT`]); the whole process group
//!   is killed at the limit and after the installer exits;
//! - a new user and network namespace (`unshare(CLONE_NEWUSER | CLONE_NEWNET)` in the
//!   child before `exec`) where the kernel permits unprivileged user namespaces: only a
//!   loopback interface that is down, so no network at all;
//! - Landlock (raw syscalls, ABI 1 and up: the `landlock` crate would add a dependency
//!   for three system calls) where the kernel has it: writes only beneath the working
//!   directory and the given writable paths (the staging tree, the disk image file and
//!   `/dev/null`); from ABI 4 also no TCP bind or connect, which covers the network
//!   where the namespace is not permitted. Reads are not restricted.
//!
//! What applied is reported on the progress line of each run.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// Environment variable with the time limit in seconds of one installer run.
pub const TIMEOUT_ENV: &str = "IMAGER_OVERLAY_TIMEOUT";
/// The time limit when [`TIMEOUT_ENV`] is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// At most this much of the installer's stdout is kept (options YAML is small).
const MAX_STDOUT: u64 = 16 << 20;
/// At most this much of its stderr goes into the error message.
const MAX_STDERR: u64 = 64 << 10;
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One overlay installer binary and how to confine it.
#[derive(Debug, Clone)]
pub struct Executor {
    /// The overlay's name, for messages.
    pub name: String,
    /// `installers/<name>` in the extracted overlay.
    pub binary: PathBuf,
    pub timeout: Duration,
}

/// What the confinement achieved on this kernel for one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Confinement {
    pub network_namespace: bool,
    /// The Landlock ABI version enforced, 0 when none.
    pub landlock_abi: i64,
}

impl std::fmt::Display for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let netns = if self.network_namespace { "yes" } else { "no" };
        match self.landlock_abi {
            0 => write!(f, "network namespace: {netns}, landlock: no"),
            abi => write!(f, "network namespace: {netns}, landlock: ABI {abi}"),
        }
    }
}

/// The time limit from [`TIMEOUT_ENV`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Ok(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{TIMEOUT_ENV}={v:?}: not a positive number of seconds"
                ))
            }),
        Err(_) => Ok(DEFAULT_TIMEOUT),
    }
}

impl Executor {
    /// Runs `<bin> <verb>` with `stdin`, allowed to write only beneath `writable`
    /// (and its own working directory); returns its stdout and what confined it.
    pub fn run(
        &self,
        verb: &str,
        stdin: &[u8],
        writable: &[PathBuf],
    ) -> Result<(Vec<u8>, Confinement)> {
        let work = super::TempDir::new("imager-overlay-run")?;
        let mut allowed: Vec<PathBuf> = writable.to_vec();
        allowed.push(work.path().to_path_buf());
        allowed.push(PathBuf::from("/dev/null"));
        let landlock = landlock::ruleset(&allowed);
        let netns = userns_maps();

        let (status_r, status_w) = pipe()?;
        let status_w_fd = status_w.as_raw_fd();
        let ruleset_fd = landlock.as_ref().map(|(fd, _)| fd.as_raw_fd());
        let abi = landlock.as_ref().map(|(_, abi)| *abi).unwrap_or(0);

        let mut cmd = Command::new(&self.binary);
        cmd.arg(verb)
            .current_dir(work.path())
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", work.path())
            .env("TMPDIR", work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, unshare, open, write, close, syscall) on
        // data prepared by the parent.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let mut flags = [0u8; 1];
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == 0 {
                    flags[0] |= 1;
                    for (file, content) in &netns {
                        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd >= 0 {
                            libc::write(fd, content.as_ptr().cast(), content.len());
                            libc::close(fd);
                        }
                    }
                }
                if let Some(fd) = ruleset_fd {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                        || landlock::restrict_self(fd) != 0
                    {
                        // Landlock was promised by the ruleset: fail rather than run
                        // unconfined.
                        return Err(std::io::Error::last_os_error());
                    }
                    flags[0] |= 2;
                }
                libc::write(status_w_fd, flags.as_ptr().cast(), 1);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io_op("running", &self.binary, e))?;
        drop(status_w);
        let mut flags = [0u8; 1];
        let _ = std::fs::File::from(status_r).read(&mut flags);
        let confinement = Confinement {
            network_namespace: flags[0] & 1 != 0,
            landlock_abi: if flags[0] & 2 != 0 { abi } else { 0 },
        };

        let mut input = child.stdin.take().expect("piped stdin");
        let stdin = stdin.to_vec();
        let feeder = std::thread::spawn(move || {
            // A broken pipe means the installer did not read it all: its exit says why.
            let _ = input.write_all(&stdin);
        });
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || drain(out, MAX_STDOUT));
        let err = std::thread::spawn(move || drain(err, MAX_STDERR));

        let pgid = child.id() as libc::pid_t;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .during("waiting for the overlay installer")?
            {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Whatever it started goes with it.
        // SAFETY: kill(2) on the installer's own process group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.wait();
                let _ = feeder.join();
                return Err(Error::Dependency(format!(
                    "overlay {:?}: installer {verb} stopped: still running after the time limit of {} s ({TIMEOUT_ENV})",
                    self.name,
                    self.timeout.as_secs()
                )));
            }
        };
        let _ = feeder.join();
        let stdout = out.join().expect("stdout reader");
        let stderr = err.join().expect("stderr reader");
        if !status.success() {
            let exit = match (status.code(), status.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(s)) => format!("signal: {}", signal_name(s)),
                _ => status.to_string(),
            };
            let stderr = String::from_utf8_lossy(&stderr);
            return Err(Error::Dependency(
                format!(
                    "overlay {:?}: failed to run overlay installer: {exit}, stdErr: {}",
                    self.name,
                    stderr.trim_end()
                )
                .replace('\n', "\\n"),
            ));
        }
        drop(work);
        Ok((stdout, confinement))
    }
}

fn signal_name(s: i32) -> String {
    match s {
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGTERM => "terminated".into(),
        s => format!("signal {s}"),
    }
}

/// Reads `r` to its end, keeping at most `limit` bytes.
fn drain(mut r: impl Read, limit: u64) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = (&mut r).take(limit).read_to_end(&mut kept);
    let _ = std::io::copy(&mut r, &mut std::io::sink());
    kept
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io_during(
            "creating a pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The files the child writes after `unshare(CLONE_NEWUSER)` to keep its own uid and
/// gid inside the new namespace.
fn userns_maps() -> Vec<(CString, Vec<u8>)> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    vec![
        (c"/proc/self/setgroups".to_owned(), b"deny".to_vec()),
        (
            c"/proc/self/uid_map".to_owned(),
            format!("{uid} {uid} 1").into_bytes(),
        ),
        (
            c"/proc/self/gid_map".to_owned(),
            format!("{gid} {gid} 1").into_bytes(),
        ),
    ]
}

/// Landlock through its three system calls (`include/uapi/linux/landlock.h`).
mod landlock {
    use super::*;

    const CREATE_RULESET: libc::c_long = 444;
    const ADD_RULE: libc::c_long = 445;
    const RESTRICT_SELF: libc::c_long = 446;
    const CREATE_RULESET_VERSION: u32 = 1;
    const RULE_PATH_BENEATH: u32 = 1;

    const WRITE_FILE: u64 = 1 << 1;
    const REMOVE_DIR: u64 = 1 << 4;
    const REMOVE_FILE: u64 = 1 << 5;
    /// MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM.
    const MAKE_ALL: u64 = 0x7f << 6;
    const REFER: u64 = 1 << 13;
    const TRUNCATE: u64 = 1 << 14;
    const NET_BIND_TCP: u64 = 1 << 0;
    const NET_CONNECT_TCP: u64 = 1 << 1;

    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
    }

    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }

    /// A ruleset allowing writes only beneath `writable` (files or directories), and
    /// no TCP from ABI 4; `None` when the kernel has no Landlock.
    pub fn ruleset(writable: &[PathBuf]) -> Option<(OwnedFd, i64)> {
        // SAFETY: the version query takes no attribute.
        let abi = unsafe {
            libc::syscall(
                CREATE_RULESET,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        };
        if abi < 1 {
            return None;
        }
        let mut fs = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_ALL;
        if abi >= 2 {
            fs |= REFER;
        }
        if abi >= 3 {
            fs |= TRUNCATE;
        }
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if abi >= 4 {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
        };
        let size = if abi >= 4 { 16usize } else { 8 };
        // SAFETY: attr outlives the call; size covers the fields this ABI knows.
        let fd = unsafe { libc::syscall(CREATE_RULESET, &attr as *const RulesetAttr, size, 0u32) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor owned by nobody else.
        let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        for path in writable {
            let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: c is a valid C string.
            let pfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if pfd < 0 {
                continue;
            }
            // SAFETY: a new descriptor owned by nobody else.
            let pfd = unsafe { OwnedFd::from_raw_fd(pfd) };
            let access = if path.is_dir() {
                fs
            } else {
                fs & (WRITE_FILE | TRUNCATE)
            };
            let rule = PathBeneath {
                allowed_access: access,
                parent_fd: pfd.as_raw_fd(),
            };
            // SAFETY: rule outlives the call.
            let r = unsafe {
                libc::syscall(
                    ADD_RULE,
                    ruleset.as_raw_fd(),
                    RULE_PATH_BENEATH,
                    &rule as *const PathBeneath,
                    0u32,
                )
            };
            if r != 0 {
                return None;
            }
        }
        Some((ruleset, abi))
    }

    /// Enforces the ruleset on the calling thread (async-signal-safe).
    pub fn restrict_self(fd: i32) -> libc::c_long {
        // SAFETY: a plain system call on a descriptor the parent opened.
        unsafe { libc::syscall(RESTRICT_SELF, fd, 0u32) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement_line() {
        let c = Confinement {
            network_namespace: true,
            landlock_abi: 4,
        };
        assert_eq!(c.to_string(), "network namespace: yes, landlock: ABI 4");
    }
}
