//! Reaching the sockets tiny_http hides, for what tiny_http does not do.
//!
//! tiny_http accepts connections itself and keeps their sockets inside its request objects. Hive
//! needs them where tiny_http falls short: to stop reading a body it refused (so tiny_http's
//! discard of the rest ends at once) and to let go of a connection whose request must be leaked
//! (see `server.rs`), and to find accepted connections that no thread reads (see `listener.rs`).
//! A connection is found among the process's open descriptors by its two ends, which no other live
//! socket shares. Two calls std does not offer (`listen` to set the backlog, `recv` to peek without
//! waiting) are declared here; std links the C library that has them.

use std::collections::HashSet;
use std::ffi::c_void;
use std::fs;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

unsafe extern "C" {
    fn listen(fd: RawFd, backlog: i32) -> i32;
    fn recv(fd: RawFd, buf: *mut c_void, len: usize, flags: i32) -> isize;
}

/// `recv` flags: look without taking, and without waiting (Linux's values).
const MSG_PEEK: i32 = 0x2;
const MSG_DONTWAIT: i32 = 0x40;

/// Sets how many connections the kernel queues for `listener` before its owner accepts them.
pub fn set_backlog(listener: &TcpListener, backlog: i32) -> io::Result<()> {
    // SAFETY: a plain system call on a descriptor the listener owns; on a listening socket it
    // only changes the backlog.
    if unsafe { listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every accepted connection on our port `local_port`: its descriptor and its peer. tiny_http
/// holds two descriptors per connection (one for reading, one for writing).
fn accepted(local_port: u16) -> Vec<(RawFd, SocketAddr)> {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter_map(|fd| {
            // Only sockets answer getpeername; anything else (or a descriptor closed meanwhile)
            // fails and is skipped. The listening socket has no peer.
            let stream = borrow(fd);
            let peer = stream.peer_addr().ok()?;
            let local = stream.local_addr().ok()?;
            (local.port() == local_port).then_some((fd, peer))
        })
        .collect()
}

/// The descriptors of the accepted connection from `peer` to our port `local_port`.
pub fn descriptors(peer: SocketAddr, local_port: u16) -> Vec<RawFd> {
    accepted(local_port)
        .into_iter()
        .filter(|&(_, from)| from == peer)
        .map(|(fd, _)| fd)
        .collect()
}

/// The peers of accepted connections on our port `local_port` that hold bytes nobody has read:
/// a request waiting for a thread to read it (or a body waiting for a body thread).
pub fn unread(local_port: u16) -> HashSet<SocketAddr> {
    accepted(local_port)
        .into_iter()
        .filter(|&(fd, _)| {
            let mut byte = 0u8;
            // SAFETY: `fd` is a socket of this process (it answered getpeername) and the buffer is
            // one valid byte; with these flags nothing is taken from the socket and nothing waits.
            let peeked = unsafe { recv(fd, (&raw mut byte).cast(), 1, MSG_PEEK | MSG_DONTWAIT) };
            peeked > 0
        })
        .map(|(_, peer)| peer)
        .collect()
}

/// Stops reading from the connection: reads from it return end-of-file at once from now on, so
/// whatever waits to read its body stops waiting. Answers can still be written.
pub fn stop_reading(fds: &[RawFd]) -> io::Result<()> {
    match fds.first() {
        Some(&fd) => borrow(fd).shutdown(Shutdown::Read),
        None => Ok(()),
    }
}

/// Limits how long each read from the connection waits for data (its `SO_RCVTIMEO`).
pub fn set_read_timeout(fds: &[RawFd], timeout: Duration) -> io::Result<()> {
    match fds.first() {
        Some(&fd) => borrow(fd).set_read_timeout(Some(timeout)),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the connection's socket was not found",
        )),
    }
}

/// Ends the connection and closes its descriptors.
///
/// # Safety
/// Nothing else may use these descriptors again: their owners must be leaked (never dropped, never
/// read or written), or a later socket that reuses a number would be read, written or closed by them.
pub unsafe fn close_for_good(fds: &[RawFd]) {
    if let Some(&fd) = fds.first() {
        let _ = borrow(fd).shutdown(Shutdown::Both);
    }
    for &fd in fds {
        // SAFETY: the caller guarantees no one else uses `fd` again; dropping closes it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// A `TcpStream` view of `fd` for the socket calls std offers only on streams. It is never dropped,
/// so the descriptor is not closed.
fn borrow(fd: RawFd) -> ManuallyDrop<TcpStream> {
    // SAFETY: the stream is only used for getsockname, getpeername and shutdown, which are harmless
    // on a descriptor that is not a socket (they fail), and it is never dropped.
    ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn eventually_unread(port: u16, peer: SocketAddr) {
        for _ in 0..200 {
            if unread(port).contains(&peer) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the request never showed as unread");
    }

    #[test]
    fn finds_both_descriptors_of_a_connection_and_stops_its_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let copy = accepted.try_clone().unwrap();

        let fds = descriptors(peer, port);
        assert_eq!(fds.len(), 2, "the accepted socket and its clone");
        assert!(descriptors(peer, port.wrapping_add(1)).is_empty());

        assert!(unread(port).is_empty());
        (&client).write_all(b"GET / HTTP/1.1\r\n").unwrap();
        eventually_unread(port, peer);

        stop_reading(&fds).unwrap();
        copy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        (&copy)
            .read_to_end(&mut rest)
            .expect("reads end without waiting for the client");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n", "what was there, then the end");
        drop(client);
    }
}
