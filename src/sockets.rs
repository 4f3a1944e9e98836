//! Reaching the socket behind a tiny_http request, which tiny_http does not hand out.
//!
//! tiny_http accepts connections itself and keeps their sockets inside its request objects. Hive
//! needs the socket in two places where tiny_http falls short (see `server.rs`): to stop reading a
//! body it refused (so tiny_http's discard of the rest ends at once), and to let go of a connection
//! whose request must be leaked. A connection is found among the process's open descriptors by its
//! two ends, which no other live socket shares.

use std::fs;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The descriptors of the accepted connection from `peer` to our port `local_port`: tiny_http
/// holds two per connection (one for reading, one for writing).
pub fn descriptors(peer: SocketAddr, local_port: u16) -> Vec<RawFd> {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| {
            // Only sockets answer getpeername; anything else (or a descriptor closed meanwhile)
            // fails and is skipped.
            let stream = borrow(fd);
            stream.peer_addr().ok() == Some(peer)
                && stream
                    .local_addr()
                    .is_ok_and(|local| local.port() == local_port)
        })
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
    use std::io::Read;
    use std::net::TcpListener;

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

        stop_reading(&fds).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!((&copy).read(&mut buf).unwrap(), 0, "reads end at once");
        drop(client);
    }
}
