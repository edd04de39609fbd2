//! Terminals for containers (`kiln run -t`).
//!
//! Both runtimes work as runc does in the foreground: when the spec asks
//! for a terminal, the runtime process's own standard streams must be a
//! terminal (the "host console"); the container gets a pseudo-terminal of
//! its own, and the runtime copies between the two, keeping the host
//! console raw and the container's window size in step with it.
//!
//! - The embedded runtime's helper gets the container's pty master from
//!   libcontainer over a console socket ([`ConsoleSocket`]) and relays it
//!   ([`relay`]).
//! - A supervisor with no terminal of its own (`run -d -t`) makes one
//!   ([`open_pty`]): the runtime gets the slave as its standard streams,
//!   the supervisor logs what comes out of the master.
// Terminal file descriptors received over a socket (SCM_RIGHTS) and
// ioctls on them have no safe wrapper.
#![allow(unsafe_code)]

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

/// A listening socket libcontainer sends the container's pty master to.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens on `dir/console.sock`. Bound through a relative path, so
    /// that a deep `dir` does not hit the 108-byte socket address limit;
    /// the caller must be single-threaded (it changes directory briefly).
    pub fn bind(dir: &Path) -> std::io::Result<ConsoleSocket> {
        let path = dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let back = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        std::env::set_current_dir(dir)?;
        let bound = UnixListener::bind("console.sock");
        let _ = std::env::set_current_dir(back);
        Ok(ConsoleSocket {
            listener: bound?,
            path,
        })
    }

    /// Where the socket is (for `ContainerBuilder::with_console_socket`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master the container's init sends (once it has
    /// connected; waits at most `timeout` for the descriptor).
    pub fn receive(&self, timeout: Duration) -> std::io::Result<OwnedFd> {
        self.listener.set_nonblocking(false)?;
        let (stream, _) = self.listener.accept()?;
        stream.set_read_timeout(Some(timeout))?;
        let mut name = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                for &extra in &fds[1..] {
                    // SAFETY: received descriptors are ours to close.
                    drop(unsafe { OwnedFd::from_raw_fd(extra) });
                }
                // SAFETY: SCM_RIGHTS gave this process a new descriptor.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        Err(std::io::Error::other(
            "the container sent no terminal on the console socket",
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A new pseudo-terminal: (master, slave).
pub fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None)?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    Ok((pty.master, pty.slave))
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    tcgetattr(fd).is_ok()
}

/// Puts a terminal in raw mode until dropped.
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode for `fd`; `None` when it is not a terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the descriptor outlives the guard (standard input).
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = tcsetattr(fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// The window size (rows, columns) of terminal `fd`, if it has one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    use nix::libc;
    // SAFETY: winsize is plain old data that TIOCGWINSZ fills.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0)
            .then_some((ws.ws_row, ws.ws_col))
    }
}

/// Copies the window size of terminal `from` to terminal `to`.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    use nix::libc;
    let Some((rows, cols)) = window_size(from) else {
        return;
    };
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize passed, on a borrowed descriptor.
    unsafe {
        libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

/// The copying between the host console (this process's standard
/// streams) and the container's pty master, on two threads.
pub struct Relay {
    output: std::thread::JoinHandle<()>,
    master: OwnedFd,
    _raw: Option<RawMode>,
}

/// Starts relaying: standard input to `master` and `master` to standard
/// output, with the host console raw and its window size applied.
pub fn relay(master: OwnedFd) -> std::io::Result<Relay> {
    let stdin = std::io::stdin();
    let raw = RawMode::enter(stdin.as_fd());
    copy_window_size(stdin.as_fd(), master.as_fd());
    let mut to_container = std::fs::File::from(master.try_clone()?);
    let mut from_container = std::fs::File::from(master.try_clone()?);
    // Ends with the process: a read of standard input cannot be interrupted.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut input = std::io::stdin().lock();
        loop {
            match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to_container.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut out = std::io::stdout().lock();
        loop {
            match from_container.read(&mut buf) {
                // EIO: every slave descriptor is closed, the container is gone.
                Ok(0) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    Ok(Relay {
        output,
        master,
        _raw: raw,
    })
}

impl Relay {
    /// Gives the container's terminal the host console's size again
    /// (on SIGWINCH).
    pub fn resize(&self) {
        copy_window_size(std::io::stdin().as_fd(), self.master.as_fd());
    }

    /// Waits (at most `timeout`) for the container's last output, then
    /// gives the host console its mode back.
    pub fn finish(self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while !self.output.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.output.is_finished() {
            let _ = self.output.join();
        }
    }
}
