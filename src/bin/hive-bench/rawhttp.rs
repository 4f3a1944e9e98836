//! Hand-written HTTP/1.1 on a plain socket, for what a load generator hides: when the first byte of
//! an answer arrives on a brand-new connection. Every read and connect ends at a deadline.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// The request of the burst: the smallest valid HTTP/1.1 `GET /healthz`.
pub const HEALTHZ_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// Bytes read at a time.
const READ_CHUNK_BYTES: usize = 4096;

/// Connects to `address` (`IP:PORT`) by `deadline`, with Nagle off so a request leaves at once.
pub fn connect(address: &str, deadline: Instant) -> io::Result<TcpStream> {
    let address: SocketAddr = address
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{address}: {e}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let stream = TcpStream::connect_timeout(&address, left)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads some bytes into `buf`, waiting no later than `deadline`: `Ok(0)` when the peer closed,
/// a `TimedOut` error when the deadline passed first.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            done => return done,
        }
    }
}

/// When the first byte of an answer arrived on `stream`, or `None` if the server closed the
/// connection or sent nothing before `deadline`. A read can wake a few milliseconds past its
/// timeout, so a byte that came after the deadline counts as none.
pub fn first_byte(stream: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    match read_by(stream, &mut chunk, deadline) {
        Ok(n) if n > 0 => Some(Instant::now()).filter(|&at| at < deadline),
        _ => None,
    }
}
