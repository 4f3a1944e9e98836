//! Removing an attempt's directory, whatever its command left in it.
//!
//! std's `remove_dir_all` already walks by descriptors and never follows a link out of the tree.
//! What stops it is a directory its owner may not read or search (`chmod 000`): root passes, the
//! drone's own user does not. So when it is refused, every directory of the tree is given back
//! its owner's read, write and search, and the removal tried again. The walk opens each entry
//! with `O_PATH | O_NOFOLLOW | O_DIRECTORY` relative to its parent's descriptor: a link (put there
//! to steer it, say at `/etc`) is never followed, and the mode is changed through that very
//! descriptor (`/proc/self/fd/N`), never through a path a process could swap meanwhile.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Deeper than this, a tree is left to `remove_dir_all` as it is.
const MAX_DEPTH: usize = 256;

/// Removes `dir` and everything in it; a missing `dir` is already removed.
pub(super) fn remove_tree(dir: &Path) -> io::Result<()> {
    let removed = match fs::remove_dir(dir) {
        // Most commands leave their directory empty: then one call removes it.
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => fs::remove_dir_all(dir),
        removed => removed,
    };
    match removed {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            open_up(dir)?;
            fs::remove_dir_all(dir)
        }
        removed => removed,
    }
}

/// Gives the owner read, write and search on `dir` and every directory under it.
fn open_up(dir: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(io::Error::other(format!("{} has no parent", dir.display())));
    };
    let parent = fs::File::open(parent)?;
    let name = CString::new(name.as_bytes()).map_err(io::Error::other)?;
    open_up_at(parent.as_raw_fd(), &name, 0)
}

/// [`open_up`] for the entry `name` of the directory open at `parent`, `depth` levels down.
/// An entry that is not a directory (a file, a link) is left as it is.
fn open_up_at(parent: RawFd, name: &CStr, depth: usize) -> io::Result<()> {
    // SAFETY: a plain system call; the descriptor it returns is new and ours.
    let path = unsafe {
        libc::openat(
            parent,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if path < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTDIR | libc::ELOOP | libc::ENOENT) => Ok(()),
            _ => Err(e),
        };
    }
    // SAFETY: just opened, owned by nothing else.
    let path = unsafe { OwnedFd::from_raw_fd(path) };
    let by_fd = format!("/proc/self/fd/{}", path.as_raw_fd());
    let mode = fs::metadata(&by_fd)?.permissions();
    let wanted = std::os::unix::fs::PermissionsExt::mode(&mode) | 0o700;
    fs::set_permissions(
        &by_fd,
        std::os::unix::fs::PermissionsExt::from_mode(wanted & 0o7777),
    )?;
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    // SAFETY: a plain system call; `path` is an open directory, and "." is that directory.
    let open = unsafe {
        libc::openat(
            path.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if open < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `open` is a directory descriptor that the stream now owns (closedir closes it).
    let stream = unsafe { libc::fdopendir(open) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `open` is still ours to close.
        unsafe { libc::close(open) };
        return Err(e);
    }
    let mut result = Ok(());
    loop {
        // SAFETY: `stream` is an open directory stream; the entry it returns lives until the
        // next readdir on it, and is copied out before then.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: as above; d_name is a NUL-terminated name.
        let (kind, child) = unsafe {
            let entry = &*entry;
            (
                entry.d_type,
                CStr::from_ptr(entry.d_name.as_ptr()).to_owned(),
            )
        };
        if child.as_bytes() == b"." || child.as_bytes() == b".." {
            continue;
        }
        if matches!(kind, libc::DT_DIR | libc::DT_UNKNOWN) {
            // SAFETY: `stream`'s descriptor stays open while the stream is.
            let fd = unsafe { libc::dirfd(stream) };
            if let Err(e) = open_up_at(fd, &child, depth + 1) {
                result = Err(e);
            }
        }
    }
    // SAFETY: closes the stream and its descriptor, once.
    unsafe { libc::closedir(stream) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn a_tree_with_locked_directories_and_links_out_is_removed_and_nothing_outside_changes() {
        let scratch = crate::exec::tests::Scratch::new();
        let outside = scratch.file("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o500)).unwrap();
        let tree = scratch.file("tree");
        fs::create_dir_all(tree.join("a/b/c")).unwrap();
        fs::write(tree.join("a/b/c/file"), "x").unwrap();
        symlink(&outside, tree.join("a/link")).unwrap();
        for locked in ["a/b/c", "a/b", "a"] {
            fs::set_permissions(tree.join(locked), fs::Permissions::from_mode(0o000)).unwrap();
        }
        // Root removes it at the first try; the drone's own user needs the second. Both parts,
        // whoever runs the test:
        open_up(&tree).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            let mode = fs::metadata(tree.join(dir)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{dir}");
        }
        fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        let mode = fs::metadata(&outside).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o500, "the link's target was left alone");
        remove_tree(&tree).unwrap();
    }
}
