//! The embedded OCI runtime: youki's `libcontainer`, run in a helper
//! process that speaks the part of runc's command line kiln uses.
//!
//! libcontainer forks and clones, which must not happen inside kiln's
//! multi-threaded async runtime. So the [`Runc`](crate::Runc) wrapper runs
//! a helper instead of the runc binary: the kiln executable re-executed as
//! `kiln __oci …` (or any program whose `main` calls [`main`] first), with
//! the same arguments it would give runc:
//!
//! ```text
//! --root DIR [--log FILE --log-format json] run [--pid-file FILE] --bundle DIR ID
//! --root DIR kill ID SIGNAL
//! --root DIR delete [--force] ID
//! --root DIR pause ID | resume ID | state ID
//! ```
//!
//! `run` creates and starts the container with libcontainer's
//! `ContainerBuilder`, passes its own standard streams to the container
//! process, forwards the signals it receives to it, waits for it, deletes
//! the container and exits with its exit code (128 + signal if killed).
//! When the process cannot be started, the reason goes to the `--log`
//! file in runc's JSON format, with runc's wording
//! (`exec: "foo": executable file not found in $PATH`), and the helper
//! exits 1: to the caller both runtimes look the same. With
//! `process.terminal`, the container's pty master comes back over a
//! console socket and the helper relays it to its own standard streams,
//! which must be a terminal, as `runc run` does (see [`crate::console`]).
// The helper forks (single-threaded) and calls into libc where
// libcontainer and rustix offer no safe wrapper.
#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::console::ConsoleSocket;

/// The subcommand name kiln's binary dispatches to [`main`].
pub const HELPER_SUBCOMMAND: &str = "__oci";

/// What the helper gets when its parent dies (no other use, so it can
/// tell).
const PARENT_GONE: NixSignal = NixSignal::SIGPWR;

/// Signals the helper passes on to the container's process while it runs.
const FORWARDED: [NixSignal; 7] = [
    NixSignal::SIGHUP,
    NixSignal::SIGINT,
    NixSignal::SIGQUIT,
    NixSignal::SIGTERM,
    NixSignal::SIGUSR1,
    NixSignal::SIGUSR2,
    NixSignal::SIGWINCH,
];

/// The helper's entry point: `args` are the arguments after the program
/// (and after [`HELPER_SUBCOMMAND`]). Returns the process exit code.
///
/// Call it before starting any thread (no async runtime): it forks.
pub fn main(args: &[OsString]) -> i32 {
    let parsed = match Args::parse(args) {
        Ok(a) => a,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "kiln __oci: {message}");
            return 2;
        }
    };
    let result = match &parsed.command {
        Command::Run { bundle, pid_file } => return run(&parsed, bundle, pid_file.as_deref()),
        Command::Kill { signal } => kill(&parsed, signal),
        Command::Delete { force } => delete(&parsed, *force),
        Command::Pause => load(&parsed).and_then(|mut c| c.pause().map_err(chain)),
        Command::Resume => load(&parsed).and_then(|mut c| c.resume().map_err(chain)),
        Command::State => load(&parsed).map(|c| {
            let status = format!("{:?}", c.status()).to_ascii_lowercase();
            let pid = c.pid().map_or(0, Pid::as_raw);
            let _ = writeln!(
                std::io::stdout(),
                r#"{{"id":"{}","status":"{status}","pid":{pid}}}"#,
                parsed.id
            );
        }),
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            parsed.log("error", &message);
            1
        }
    }
}

#[derive(Debug)]
enum Command {
    Run {
        bundle: PathBuf,
        pid_file: Option<PathBuf>,
    },
    Kill {
        signal: String,
    },
    Delete {
        force: bool,
    },
    Pause,
    Resume,
    State,
}

#[derive(Debug)]
struct Args {
    root: PathBuf,
    log: Option<PathBuf>,
    id: String,
    command: Command,
}

impl Args {
    fn parse(args: &[OsString]) -> Result<Args, String> {
        let mut it = args.iter().map(OsString::as_os_str);
        let mut root = None;
        let mut log = None;
        let value = |it: &mut dyn Iterator<Item = &OsStr>, flag: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let command = loop {
            let Some(arg) = it.next() else {
                return Err("no command".into());
            };
            match arg.to_str() {
                Some("--root") => root = Some(value(&mut it, "--root")?),
                Some("--log") => log = Some(value(&mut it, "--log")?),
                Some("--log-format") => {
                    value(&mut it, "--log-format")?;
                }
                Some(c) => break c.to_owned(),
                None => return Err(format!("unknown argument {arg:?}")),
            }
        };
        let root = root.ok_or("--root is required")?;
        let mut bundle = None;
        let mut pid_file = None;
        let mut force = false;
        let mut positional = Vec::new();
        while let Some(arg) = it.next() {
            match arg.to_str() {
                Some("--bundle" | "-b") => bundle = Some(value(&mut it, "--bundle")?),
                Some("--pid-file") => pid_file = Some(value(&mut it, "--pid-file")?),
                Some("--force" | "-f") => force = true,
                Some(a) if !a.starts_with('-') || a.len() == 1 => positional.push(a.to_owned()),
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        let mut positional = positional.into_iter();
        let id = positional.next().ok_or("a container id is required")?;
        let command = match command.as_str() {
            "run" => Command::Run {
                bundle: bundle.ok_or("--bundle is required")?,
                pid_file,
            },
            "kill" => Command::Kill {
                signal: positional.next().unwrap_or_else(|| "TERM".to_owned()),
            },
            "delete" => Command::Delete { force },
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "state" => Command::State,
            other => return Err(format!("unknown command {other:?}")),
        };
        Ok(Args {
            root,
            log,
            id,
            command,
        })
    }

    /// Appends a line in runc's JSON log format to `--log`; without it,
    /// writes the message to standard error (as runc does).
    fn log(&self, level: &str, message: &str) {
        let Some(path) = &self.log else {
            let _ = writeln!(std::io::stderr(), "{message}");
            return;
        };
        let line = serde_json::json!({
            "level": level,
            "msg": message,
            "time": chrono::Utc::now().to_rfc3339(),
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            let _ = writeln!(std::io::stderr(), "cannot write {}: {e}", path.display());
        }
    }

    fn container_dir(&self) -> PathBuf {
        self.root.join(&self.id)
    }
}

/// The error and its causes on one line.
fn chain(e: impl std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

fn load(args: &Args) -> Result<Container, String> {
    let dir = args.container_dir();
    if !dir.join("state.json").exists() {
        return Err(format!("container {} does not exist", args.id));
    }
    Container::load(dir).map_err(chain)
}

fn kill(args: &Args, signal: &str) -> Result<(), String> {
    let signal = Signal::try_from(signal).map_err(chain)?;
    let mut container = load(args)?;
    if !container.can_kill() {
        return Err(format!("container {} is not running", args.id));
    }
    container.kill(signal, false).map_err(chain)
}

fn delete(args: &Args, force: bool) -> Result<(), String> {
    let dir = args.container_dir();
    match load(args) {
        Ok(mut c) => c.delete(force).map_err(chain),
        // A container whose state could not be read (killed while being
        // created): nothing runs from it; drop what is left.
        Err(e) if force && dir.exists() && !e.contains("does not exist") => {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))
        }
        Err(e) => Err(e),
    }
}

/// `run`: create, start, forward signals, wait, delete.
fn run(args: &Args, bundle: &Path, pid_file: Option<&Path>) -> i32 {
    // Orphans of the container's setup processes are reaped here.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // The container dies with whoever runs it (a killed kiln leaves no
    // step running): the parent's death is signalled with PARENT_GONE,
    // which kills the container once it runs.
    let parent = nix::unistd::getppid();
    if nix::sys::prctl::set_pdeathsig(PARENT_GONE).is_err() || nix::unistd::getppid() != parent {
        return start_failed(args, "the process that started the container is gone");
    }
    let console = match wants_terminal(bundle) {
        Ok(false) => None,
        Ok(true) if !crate::console::is_terminal(std::io::stdin().as_fd()) => {
            return start_failed(args, "the input device is not a TTY");
        }
        Ok(true) => match ConsoleSocket::bind(bundle) {
            Ok(c) => Some(c),
            Err(e) => return start_failed(args, &format!("cannot create the console socket: {e}")),
        },
        Err(message) => return start_failed(args, &message),
    };
    let built = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_executor(KilnExecutor)
        .with_root_path(&args.root)
        .map(|b| b.with_console_socket(console.as_ref().map(ConsoleSocket::path)))
        .and_then(|b| {
            b.as_init(bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    let mut container = match built {
        Ok(c) => c,
        Err(e) => return start_failed(args, &chain(e)),
    };
    // Blocked only now, so the container process did not inherit the mask.
    let mut mask = SigSet::empty();
    mask.add(NixSignal::SIGCHLD);
    mask.add(PARENT_GONE);
    for s in FORWARDED {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        let _ = container.delete(true);
        return start_failed(args, &format!("cannot block signals: {e}"));
    }
    if let Some(init) = container.pid()
        && let Err(e) = loopback_up(init)
    {
        let _ = container.delete(true);
        return start_failed(
            args,
            &format!("cannot bring up the loopback interface: {e}"),
        );
    }
    if let Some(init) = container.pid()
        && let Err(e) = readonly_cgroups(init)
    {
        let _ = container.delete(true);
        return start_failed(
            args,
            &format!("cannot make the cgroup mounts read-only: {e}"),
        );
    }
    // The container's init sent its terminal before waiting to be
    // started: attach it (with the host console's size) before the
    // process runs, so it never sees a 0×0 terminal.
    let relay = match console.as_ref().map(|c| {
        c.receive(Duration::from_secs(10))
            .and_then(crate::console::relay)
    }) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            let _ = container.delete(true);
            return start_failed(args, &format!("cannot attach the terminal: {e}"));
        }
    };
    drop(console);
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return start_failed(args, &chain(e));
    }
    let Some(init) = container.pid() else {
        let _ = container.delete(true);
        return start_failed(args, "the container has no process");
    };
    // Written only now (libcontainer's would appear before the process
    // is known to start), whole (readers poll for it).
    if let Some(path) = pid_file {
        let written = kiln_fs::replace_file(
            path,
            init.as_raw().to_string().as_bytes(),
            kiln_fs::Durability::Atomic,
        );
        if let Err(e) = written {
            args.log("warning", &format!("cannot write {}: {e}", path.display()));
        }
    }
    let code = wait_forwarding(init, &mask, relay.as_ref());
    if let Some(relay) = relay {
        relay.finish(Duration::from_secs(1));
    }
    if let Err(e) = container.refresh_status().and_then(|()| {
        if container.status() == ContainerStatus::Stopped {
            container.delete(true)
        } else {
            Ok(())
        }
    }) {
        args.log("warning", &format!("cannot delete container: {}", chain(e)));
    }
    code
}

/// Brings `lo` up in the network namespace of process `pid` when it has
/// one of its own, as runc does (libcontainer leaves it down).
fn loopback_up(pid: Pid) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let ours = std::fs::File::open("/proc/self/ns/net")?;
    if theirs.metadata()?.ino() == ours.metadata()?.ino() {
        return Ok(());
    }
    nix::sched::setns(&theirs, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let result = set_interface_up(c"lo");
    nix::sched::setns(&ours, nix::sched::CloneFlags::CLONE_NEWNET)?;
    result
}

/// Remounts the container's cgroup v1 controller mounts read-only (and
/// nosuid, nodev, noexec), as runc and BuildKit have them: libcontainer
/// leaves them writable, which would let a step change its own limits.
/// The container is created and waits to be started, its mounts in place.
fn readonly_cgroups(pid: Pid) -> std::io::Result<()> {
    use nix::libc;
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let mut targets = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(point), Some(opts)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let writable = opts.split(',').any(|o| o == "rw");
        if right.starts_with("cgroup ") && point.starts_with("/sys/fs/cgroup/") && writable {
            targets.push(CString::new(*point).map_err(std::io::Error::other)?);
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    let flags = libc::MS_REMOUNT
        | libc::MS_BIND
        | libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC;
    // A child enters the container's mount namespace (which a process
    // sharing its filesystem state with threads may not); it makes only
    // raw system calls.
    // SAFETY: the child calls only setns, mount and _exit (no allocation,
    // no locks) before it exits.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            // SAFETY: raw system calls on valid descriptors and C strings.
            let code = unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    1
                } else {
                    let mut failed = 0;
                    for t in &targets {
                        let r = libc::mount(
                            std::ptr::null(),
                            t.as_ptr(),
                            std::ptr::null(),
                            flags,
                            std::ptr::null(),
                        );
                        if r != 0 {
                            failed = 2;
                        }
                    }
                    failed
                }
            };
            // SAFETY: ends the child without running the parent's atexit
            // handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, 1)) => Err(std::io::Error::other(
                "cannot enter the container's mount namespace",
            )),
            Ok(other) => Err(std::io::Error::other(format!("remount failed: {other:?}"))),
            Err(e) => Err(e.into()),
        },
    }
}

/// `ip link set NAME up` in the current network namespace.
pub(crate) fn set_interface_up(name: &std::ffi::CStr) -> std::io::Result<()> {
    use nix::libc;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let bytes = name.to_bytes_with_nul();
    // SAFETY: plain socket(2); the result is checked before being owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() > req.ifr_name.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq passed,
    // which lives across both calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn start_failed(args: &Args, message: &str) -> i32 {
    // libcontainer passes the init process's error up with a prefix.
    let reason = message
        .rsplit_once("error in executing process : ")
        .map_or(message, |(_, r)| r);
    let message = format!("runc run failed: unable to start container process: {reason}");
    args.log("error", &message);
    1
}

/// Whether the bundle's process wants a terminal.
fn wants_terminal(bundle: &Path) -> Result<bool, String> {
    let path = bundle.join("config.json");
    let spec = Spec::load(&path).map_err(|e| format!("{}: {}", path.display(), chain(e)))?;
    Ok(spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false))
}

/// Waits for `init`, passing the signals of `mask` other than SIGCHLD on
/// to it; returns its exit code. Other children are reaped on the way.
/// With a terminal (`relay`), SIGWINCH resizes the container's instead.
fn wait_forwarding(init: Pid, mask: &SigSet, relay: Option<&crate::console::Relay>) -> i32 {
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == init => return code,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                // No child left: it was reaped elsewhere.
                Err(nix::errno::Errno::ECHILD) => return 255,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        match mask.wait() {
            Ok(NixSignal::SIGCHLD) | Err(_) => {}
            Ok(NixSignal::SIGWINCH) if relay.is_some() => {
                relay.into_iter().for_each(crate::console::Relay::resize);
            }
            Ok(PARENT_GONE) => {
                let _ = nix::sys::signal::kill(init, NixSignal::SIGKILL);
            }
            Ok(sig) => {
                let _ = nix::sys::signal::kill(init, sig);
            }
        }
    }
}

/// Runs the process as libcontainer's default executor does, but
/// validates it first with runc's messages, so that a missing command is
/// reported as `exec: "foo": executable file not found in $PATH`.
#[derive(Clone)]
struct KilnExecutor;

impl Executor for KilnExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // This process is the helper's fork: it has the helper's ignored
        // SIGPIPE and blocked signals, which the workload must not inherit.
        crate::signals::reset_to_default();
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let process = spec.process().as_ref();
        let args = process.and_then(|p| p.args().as_ref());
        let Some(name) = args.and_then(|a| a.first()) else {
            return Err(ExecutorValidationError::ArgValidationError(
                "args must not be empty".into(),
            ));
        };
        let path = process
            .and_then(|p| p.env().as_ref())
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
            .unwrap_or_default();
        look_path(name, path).map(|_| ()).map_err(|reason| {
            ExecutorValidationError::ArgValidationError(format!("exec: {name:?}: {reason}"))
        })
    }
}

/// Finds `name` as Go's `exec.LookPath` does (which runc uses), with its
/// error texts.
fn look_path(name: &str, path_var: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return executable(Path::new(name)).map(|()| PathBuf::from(name));
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err("executable file not found in $PATH".into())
}

fn executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let text = e.to_string();
        // "No such file or directory (os error 2)" → Go's wording.
        let text = text
            .split(" (os error")
            .next()
            .unwrap_or(&text)
            .to_lowercase();
        format!("stat {}: {text}", path.display())
    })?;
    if meta.is_dir() {
        // runc: not a regular file.
        return Err("permission denied".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("permission denied".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn runc_command_lines_parse() {
        let a = Args::parse(&os(&[
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "run",
            "--pid-file",
            "/p",
            "--bundle",
            "/b",
            "id1",
        ]))
        .unwrap();
        assert_eq!(a.root, Path::new("/r"));
        assert_eq!(a.log.as_deref(), Some(Path::new("/l")));
        assert_eq!(a.id, "id1");
        assert!(matches!(
            a.command,
            Command::Run { ref bundle, pid_file: Some(ref p) } if bundle == Path::new("/b") && p == Path::new("/p")
        ));
        let a = Args::parse(&os(&["--root", "/r", "kill", "id1", "KILL"])).unwrap();
        assert!(matches!(a.command, Command::Kill { ref signal } if signal == "KILL"));
        let a = Args::parse(&os(&["--root", "/r", "delete", "--force", "id1"])).unwrap();
        assert!(matches!(a.command, Command::Delete { force: true }));
        assert!(Args::parse(&os(&["--root", "/r", "frobnicate", "x"])).is_err());
        assert!(Args::parse(&os(&["kill", "x"])).is_err());
    }

    #[test]
    fn lookups_use_runc_wording() {
        assert_eq!(
            look_path("surely-not-a-command", "/bin:/usr/bin").unwrap_err(),
            "executable file not found in $PATH"
        );
        assert_eq!(
            look_path("/nonexistent/x", "").unwrap_err(),
            "stat /nonexistent/x: no such file or directory"
        );
        assert_eq!(look_path("/", "").unwrap_err(), "permission denied");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            look_path(file.to_str().unwrap(), "").unwrap_err(),
            "permission denied"
        );
        assert!(look_path("sh", "/nonexistent:/bin:/usr/bin").is_ok());
    }

    #[test]
    fn missing_containers_do_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        assert_eq!(main(&os(&["--root", root, "kill", "nope", "KILL"])), 1);
        assert_eq!(main(&os(&["--root", root, "delete", "--force", "nope"])), 1);
    }
}
