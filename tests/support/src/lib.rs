//! What Hive's benchmark (`tests/bench`) shares with other tooling to run real processes on
//! loopback and look at them from outside.
//!
//! Where things are: [`process`] starts a child with its output in files and kills it when the
//! guard is dropped; [`larve`] starts larves from a binary the caller names and waits until they
//! listen; [`rawhttp`] speaks HTTP/1.1 by hand on a plain socket; [`procfs`] reads a process's
//! threads, memory and descriptors; [`wait`] is the one way to wait, polling with a deadline.
//!
//! Errors are one line of text (a [`Result`]), so the bench can put one in its report.

pub mod larve;
pub mod process;
pub mod procfs;
pub mod rawhttp;
pub mod wait;

/// An error is one line saying what failed and why.
pub type Result<T> = std::result::Result<T, String>;
