//! Signal state for processes kiln starts: every container process (and
//! the OCI runtime that starts it) begins with default dispositions and
//! nothing blocked, as BuildKit's and Docker's do. kiln itself ignores
//! SIGPIPE (Rust's runtime does) and may have been started with SIGINT or
//! SIGQUIT ignored (a background job of a script); ignored dispositions
//! survive `execve`, so without this `yes | head` spins forever in a RUN
//! step.
// Raw rt_sigaction: resetting every disposition, glibc's reserved
// signals included, has no safe wrapper.
#![allow(unsafe_code)]

use nix::libc;

/// Sets every signal's disposition to the default and unblocks all.
///
/// Async-signal-safe: meant for a child between `fork` and `execve`
/// (`pre_exec`), or a process about to `execve`.
pub fn reset_to_default() {
    // SAFETY: sigaction/sigprocmask with valid arguments; a signal number
    // the kernel refuses (SIGKILL, SIGSTOP, the C library's reserved
    // real-time signals) just fails, which is fine.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            if sig < libc::SIGRTMIN() {
                libc::signal(sig, libc::SIG_DFL);
            } else {
                raw_default(sig);
            }
        }
        // The C library's own real-time signals (32 and 33 with glibc),
        // which its sigaction refuses to touch.
        for sig in 32..libc::SIGRTMIN() {
            raw_default(sig);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// `rt_sigaction(sig, SIG_DFL)` without the C library's filter.
///
/// # Safety
/// Async-signal-safe; changes the process's disposition of `sig`.
unsafe fn raw_default(sig: libc::c_int) {
    // SAFETY: as the caller's.
    unsafe { raw_disposition(sig, 0) }
}

/// `rt_sigaction(sig, handler)` with a handler of 0 (SIG_DFL) or 1
/// (SIG_IGN), no flags and an empty mask.
///
/// # Safety
/// Async-signal-safe; changes the process's disposition of `sig`.
unsafe fn raw_disposition(sig: libc::c_int, handler: u64) {
    // The kernel's struct sigaction: handler, flags, restorer (where the
    // architecture has one), mask.
    let action = [handler, 0, 0, 0];
    // SAFETY: the kernel reads at most the struct's size from `action`.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            action.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn children_start_with_default_sigpipe() {
        // The test harness (Rust) ignores SIGPIPE; a child reset before
        // exec sees it at its default (SigIgn mask bit 13 clear).
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "grep SigIgn /proc/self/status"]);
        // SAFETY: reset_to_default is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Simulate an inherited ignored SIGPIPE and SIGINT.
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                raw_disposition(33, 1);
                reset_to_default();
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "{line}");
        assert_eq!(mask, 0, "{line}");
    }
}
