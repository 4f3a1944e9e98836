//! What Hive's integration tests (`tests/*.rs`) and its benchmark (`tests/bench`) both need to run
//! real processes on loopback and look at them from outside.
//!
//! Where things are: [`process`] starts a child with its output in files and kills it when the
//! guard is dropped; [`larve`] starts larves from a binary the caller names (the tests know theirs
//! from Cargo, the bench from its command line) and waits until they listen; [`etcd`] starts one
//! etcd member or a cluster on free loopback ports; [`workdir`] is the temporary directory their
//! data and logs go to; [`ports`] finds free loopback ports; [`rawhttp`] speaks HTTP/1.1 by hand on
//! a plain socket; [`pki`] makes TLS certificates with `openssl`; [`procfs`] reads a process's threads, memory and descriptors; [`wait`] is the
//! one way to wait, polling with a deadline.
//!
//! Nothing here can hang or leak: every wait and read has a deadline, and every process, thread and
//! directory is held by a guard that ends or removes it when dropped, even while a panic unwinds.
//! Errors are one line of text (a [`Result`]), so the bench can put one in its report and a test
//! can `expect` it.

pub mod etcd;
pub mod larve;
pub mod pki;
pub mod ports;
pub mod process;
pub mod procfs;
pub mod rawhttp;
pub mod wait;
pub mod workdir;

/// An error is one line saying what failed and why.
pub type Result<T> = std::result::Result<T, String>;
