//! The userland proxy for published ports (`-p HOST:CONTAINER`). A
//! container on the `none` network has only `lo`, so nothing on the host
//! can route to it: the supervisor listens on the host address and, for
//! each connection, connects to `127.0.0.1:CONTAINER_PORT` from a thread
//! that entered the container's network namespace (`setns` changes only
//! the calling thread's namespace; a socket stays in the namespace it was
//! created in), then copies bytes both ways.
//!
//! Listeners are bound before the container starts (a taken port fails
//! the start); connections wait in the backlog until the namespace is
//! known.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::state::PortMapping;
use crate::error::{Error, Result};

/// Bound listeners, not yet forwarding.
#[derive(Debug)]
pub struct BoundPorts {
    listeners: Vec<(TcpListener, u16)>,
}

/// Forwarding listeners; stopped on [`PortProxy::stop`] or drop.
#[derive(Debug)]
pub struct PortProxy {
    stop: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds every mapping's host address.
pub fn bind(ports: &[PortMapping]) -> Result<BoundPorts> {
    let mut listeners = Vec::new();
    for p in ports {
        let addr = format!("{}:{}", p.host_ip, p.host_port);
        let listener = TcpListener::bind(&addr).map_err(|source| Error::PortInUse {
            addr: addr.clone(),
            source,
        })?;
        listeners.push((listener, p.container_port));
    }
    Ok(BoundPorts { listeners })
}

impl BoundPorts {
    /// Starts forwarding into the network namespace `netns` (an open
    /// `/proc/<pid>/ns/net`).
    /// No port is published.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    pub fn start(self, netns: File) -> PortProxy {
        let netns = Arc::new(netns);
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for (listener, port) in self.listeners {
            if let Ok(a) = listener.local_addr() {
                addrs.push(a);
            }
            let netns = Arc::clone(&netns);
            let stop = Arc::clone(&stop);
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-proxy-{port}"))
                .spawn(move || accept_loop(listener, port, netns, stop));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::warn!(port, error = %e, "cannot start port proxy"),
            }
        }
        PortProxy {
            stop,
            addrs,
            threads,
        }
    }
}

impl PortProxy {
    /// Stops accepting connections (open ones end with the container).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for addr in &self.addrs {
            // Wakes the blocked accept.
            let mut a = *addr;
            if a.ip().is_unspecified() {
                a.set_ip([127, 0, 0, 1].into());
            }
            let _ = TcpStream::connect(a);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, port: u16, netns: Arc<File>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let client = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(port, error = %e, "accept failed");
                continue;
            }
        };
        let netns = Arc::clone(&netns);
        let spawned = std::thread::Builder::new()
            .name("kiln-proxy-conn".into())
            .spawn(move || {
                if let Err(e) = forward(client, port, &netns) {
                    tracing::debug!(port, error = %e, "proxied connection failed");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a proxy thread");
        }
    }
}

/// Runs on its own thread: enters the namespace, connects, copies.
fn forward(client: TcpStream, port: u16, netns: &File) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        netns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    let upstream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => {
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let back = std::thread::Builder::new()
        .name("kiln-proxy-copy".into())
        .spawn(move || copy(u2, c2))?;
    copy(client, upstream);
    let _ = back.join();
    Ok(())
}

/// Copies until EOF, then half-closes the destination.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
