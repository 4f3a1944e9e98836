//! Reaching the sockets tiny_http hides, for what tiny_http does not do.
//!
//! tiny_http accepts connections itself and keeps their sockets inside its request objects. Hive
//! needs them where tiny_http falls short: to stop reading a body it refused (so tiny_http's
//! discard of the rest ends at once) and to let go of a connection whose request must be leaked
//! (see `server.rs`), and to find accepted connections that hold a request no thread has read (see
//! `listener.rs`). A connection is found among the process's open descriptors (Linux's
//! `/proc/self/fd`; elsewhere none is found) by its two ends, and must be exactly one socket.
//!
//! The socket calls std does not offer are declared here; std links the C library that has them.
//! The descriptor scan asks each descriptor for its addresses with `getsockname` and `getpeername`
//! directly, rather than through a borrowed `TcpStream`: a descriptor may be closed, or reused by
//! something that is not a socket, between the listing and the call, which these calls survive.

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::fs;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

unsafe extern "C" {
    fn listen(fd: RawFd, backlog: i32) -> i32;
    fn recv(fd: RawFd, buf: *mut c_void, len: usize, flags: i32) -> isize;
    fn getsockname(fd: RawFd, addr: *mut c_void, len: *mut u32) -> i32;
    fn getpeername(fd: RawFd, addr: *mut c_void, len: *mut u32) -> i32;
    fn getsockopt(fd: RawFd, level: i32, name: i32, value: *mut c_void, len: *mut u32) -> i32;
}

/// Linux's values (the scan that uses them needs Linux's `/proc` anyway): `recv` flags to look
/// without taking and without waiting, and the address families.
const MSG_PEEK: i32 = 0x2;
const MSG_DONTWAIT: i32 = 0x40;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// `getsockopt` level and name of `struct tcp_info`, and where in it `tcpi_bytes_acked` (the bytes
/// this end sent that the peer has acknowledged) sits: after 8 one-byte fields and 24 four-byte
/// ones, then two eight-byte rates.
const SOL_TCP: i32 = 6;
const TCP_INFO: i32 = 11;
const TCP_INFO_BYTES: usize = 256;
const BYTES_ACKED_AT: usize = 120;

/// Size of a `sockaddr_storage`, which holds any address.
const SOCKADDR_STORAGE_BYTES: usize = 128;

/// How many of a connection's waiting bytes are looked at to tell a request line.
const PEEK_BYTES: usize = 16;

/// Sets timeouts, `TCP_NODELAY` and the backlog on a listening socket. Linux copies the options to
/// every accepted socket, which is the only way to reach tiny_http's connections: it accepts them.
pub fn configure_listener(
    listener: &TcpListener,
    timeout: Duration,
    backlog: i32,
) -> io::Result<()> {
    // SAFETY: the descriptor is open (the listener owns it) and outlives this borrow, which is
    // never dropped, so the descriptor is not closed.
    let borrowed = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
    borrowed.set_read_timeout(Some(timeout))?;
    borrowed.set_write_timeout(Some(timeout))?;
    borrowed.set_nodelay(true)?;
    // SAFETY: a plain system call on a descriptor the listener owns; on a listening socket it
    // only changes the backlog.
    if unsafe { listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One address of a socket, from `getsockname` or `getpeername`; `None` for anything else (a
/// descriptor that is not an IP socket, or no longer open).
fn address(
    fd: RawFd,
    call: unsafe extern "C" fn(RawFd, *mut c_void, *mut u32) -> i32,
) -> Option<SocketAddr> {
    let mut storage = [0u8; SOCKADDR_STORAGE_BYTES];
    let mut len = SOCKADDR_STORAGE_BYTES as u32;
    // SAFETY: the buffer is as large as `len` says, and the call writes at most `len` bytes.
    if unsafe { call(fd, storage.as_mut_ptr().cast(), &mut len) } != 0 {
        return None;
    }
    let bytes = &storage[..(len as usize).min(SOCKADDR_STORAGE_BYTES)];
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match family {
        AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::from((Ipv4Addr::from(ip), port)))
        }
        AF_INET6 => {
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::from((Ipv6Addr::from(ip), port)))
        }
        _ => None,
    }
}

/// An accepted connection's descriptor on our port, and its peer. tiny_http holds two
/// descriptors per connection, one to read and one to write.
struct Accepted {
    fd: RawFd,
    peer: SocketAddr,
}

/// Every accepted connection's descriptors on our port `local_port`.
fn accepted(local_port: u16) -> Vec<Accepted> {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let fd = entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok()?;
            // Our own outgoing connections (to drones, to etcd) have other local ports: skipped on
            // one call. The listening socket has no peer; nor has anything that is not a socket.
            (address(fd, getsockname)?.port() == local_port).then_some(())?;
            let peer = address(fd, getpeername)?;
            Some(Accepted { fd, peer })
        })
        .collect()
}

/// The socket of one accepted connection, found by its two ends.
pub struct Connection {
    fds: Vec<RawFd>,
}

impl Connection {
    /// The connection from `peer` to our port `local_port`, if exactly one socket matches. Two
    /// could, on a host with several addresses, when one peer reaches two of them on one port:
    /// then none is returned, so nothing acts on a connection it does not own.
    pub fn find(peer: SocketAddr, local_port: u16) -> Option<Connection> {
        let mut sockets: HashMap<PathBuf, Vec<RawFd>> = HashMap::new();
        for found in accepted(local_port).into_iter().filter(|a| a.peer == peer) {
            // The socket's inode (`socket:[123]`), the same for both of a connection's descriptors.
            let inode = fs::read_link(format!("/proc/self/fd/{}", found.fd)).ok()?;
            sockets.entry(inode).or_default().push(found.fd);
        }
        let mut sockets = sockets.into_values();
        match (sockets.next(), sockets.next()) {
            (Some(fds), None) => Some(Connection { fds }),
            _ => None,
        }
    }

    /// Stops reading from the connection: once what has arrived is read, reads return end-of-file
    /// at once, so whatever waits to read its body stops waiting. Answers can still be written.
    pub fn stop_reading(&self) -> io::Result<()> {
        self.borrow().shutdown(Shutdown::Read)
    }

    /// Limits how long each read from the connection waits for data (its `SO_RCVTIMEO`).
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.borrow().set_read_timeout(Some(timeout))
    }

    /// Ends the connection and closes its descriptors.
    ///
    /// # Safety
    /// Nothing else may use these descriptors again: their owners must be leaked (never dropped,
    /// never read or written), or a later socket that reuses a number would be read, written or
    /// closed by them.
    pub unsafe fn close_for_good(self) {
        let _ = self.borrow().shutdown(Shutdown::Both);
        for fd in self.fds {
            // SAFETY: the caller guarantees no one else uses `fd` again; dropping closes it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    /// A `TcpStream` view of the socket for the calls std offers only on streams. It is never
    /// dropped, so the descriptor is not closed.
    fn borrow(&self) -> ManuallyDrop<TcpStream> {
        // SAFETY: the descriptor was found open, and its owner (a tiny_http request the caller
        // holds) keeps it open; the view is never dropped.
        ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(self.fds[0]) })
    }
}

/// The peers of accepted connections on our port `local_port` that no thread has ever served:
/// their waiting bytes begin with a request line (`GET /...`), and they have never sent a byte.
/// A kept-alive connection whose next request waits on a busy machine has answered before; a body
/// waiting for a body thread is not a request line: neither counts.
pub fn unserved_requests(local_port: u16) -> HashSet<SocketAddr> {
    accepted(local_port)
        .into_iter()
        .filter(|found| waits_with_a_request(found.fd) && never_sent(found.fd))
        .map(|found| found.peer)
        .collect()
}

/// Whether `fd`'s unread bytes begin a request line.
fn waits_with_a_request(fd: RawFd) -> bool {
    let mut head = [0u8; PEEK_BYTES];
    // SAFETY: `fd` was a socket of this process a moment ago (if it has been reused since, the
    // peek fails or looks at another socket, harmlessly); the buffer holds `PEEK_BYTES`; with
    // these flags nothing is taken from the socket and nothing waits.
    let peeked = unsafe {
        recv(
            fd,
            head.as_mut_ptr().cast(),
            PEEK_BYTES,
            MSG_PEEK | MSG_DONTWAIT,
        )
    };
    usize::try_from(peeked).is_ok_and(|n| starts_a_request(&head[..n.min(PEEK_BYTES)]))
}

/// Whether the TCP connection `fd` has never had a byte it sent acknowledged: it never answered.
fn never_sent(fd: RawFd) -> bool {
    let mut info = [0u8; TCP_INFO_BYTES];
    let mut len = TCP_INFO_BYTES as u32;
    // SAFETY: the buffer is as large as `len` says, and the call writes at most `len` bytes.
    let got = unsafe { getsockopt(fd, SOL_TCP, TCP_INFO, info.as_mut_ptr().cast(), &mut len) };
    let acked = info
        .get(BYTES_ACKED_AT..BYTES_ACKED_AT + 8)
        .filter(|_| got == 0 && len as usize >= BYTES_ACKED_AT + 8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_ne_bytes);
    acked == Some(0)
}

/// Whether `bytes` begin a request line: a method in capitals, then a space.
fn starts_a_request(bytes: &[u8]) -> bool {
    let method = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method > 0 && bytes.get(method) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn eventually_unread(port: u16, peer: SocketAddr) {
        for _ in 0..200 {
            if unserved_requests(port).contains(&peer) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the request never showed as unread");
    }

    #[test]
    fn finds_a_connection_by_its_ends_and_stops_its_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let copy = accepted.try_clone().unwrap();

        let connection = Connection::find(peer, port).expect("the connection");
        assert_eq!(connection.fds.len(), 2, "the accepted socket and its clone");
        assert!(Connection::find(peer, port.wrapping_add(1)).is_none());

        (&client).write_all(b"{\"text\": \"a body\"}").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            unserved_requests(port).is_empty(),
            "a body is not a request"
        );
        (&copy).read_exact(&mut [0u8; 18]).unwrap();
        (&client).write_all(b"GET / HTTP/1.1\r\n").unwrap();
        eventually_unread(port, peer);
        // Once this end has answered something, a waiting request is a kept-alive connection's.
        (&copy).write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        (&client).read_exact(&mut [0u8; 19]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(unserved_requests(port).is_empty(), "it was served before");

        connection.stop_reading().unwrap();
        copy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        (&copy)
            .read_to_end(&mut rest)
            .expect("reads end without waiting for the client");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n", "what was there, then the end");
        drop(client);
    }

    #[test]
    fn request_lines_are_told_from_bodies() {
        for line in [&b"GET /healthz HTTP/1.1"[..], b"POST /", b"HIVE-SELF-CHECK"] {
            assert_eq!(
                starts_a_request(line),
                line != b"HIVE-SELF-CHECK",
                "{line:?}"
            );
        }
        for body in [&b"{\"text\""[..], b"400\r\n", b"", b"get / ", b" GET /"] {
            assert!(!starts_a_request(body), "{body:?}");
        }
    }
}
