//! The user attempts run as (`--run-as`): by default `nobody` for a drone run as root, so that a
//! task can read nothing of the drone's (its token file, its journal, its work root), signal
//! none of its processes and use none of root's powers; otherwise the drone's own user, which
//! protects nothing and is said at start.
//!
//! Looked up once, at start, from the system's user database; the command's process takes the
//! user's groups, group and id itself, between its clone and its exec (see `child.rs`).

use std::ffi::{CStr, CString};
use std::io;
use std::path::PathBuf;

/// Who runs a drone's attempts, and with which groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Its supplementary groups, its primary one among them.
    pub groups: Vec<u32>,
    /// Its home directory: the commands' `HOME`.
    pub home: PathBuf,
}

/// The user a drone run as root gives its attempts unless `--run-as` says otherwise.
pub const ROOT_DEFAULT_USER: &str = "nobody";

/// Longest buffer the user and group lookups are given, growing from the system's hint.
const MAX_LOOKUP_BYTES: usize = 1 << 20;

impl User {
    /// The user named `name` in the user database, or why not.
    pub fn named(name: &str) -> Result<User, String> {
        let c_name =
            CString::new(name).map_err(|_| format!("{name:?} is not a user name (a NUL in it)"))?;
        let entry = lookup(|pwd, buf, len, found| {
            // SAFETY: every pointer is to live memory of the given length; the result is read
            // only when `found` is set.
            unsafe { libc::getpwnam_r(c_name.as_ptr(), pwd, buf, len, found) }
        })
        .map_err(|e| format!("cannot look up the user {name:?}: {e}"))?
        .ok_or_else(|| format!("no user is named {name:?}"))?;
        Ok(User {
            groups: groups_of(&c_name, entry.gid)?,
            ..entry
        })
    }

    /// The user this process runs as. One the database does not know (a container's arbitrary
    /// uid) is its number, with its group, no other groups and `/` for a home.
    pub fn of_this_process() -> User {
        // SAFETY: neither call has preconditions or can fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let entry = lookup(|pwd, buf, len, found| {
            // SAFETY: as in `named`.
            unsafe { libc::getpwuid_r(uid, pwd, buf, len, found) }
        });
        match entry {
            Ok(Some(entry)) => {
                let groups = CString::new(entry.name.clone())
                    .ok()
                    .and_then(|name| groups_of(&name, entry.gid).ok())
                    .unwrap_or_else(|| vec![entry.gid]);
                User { groups, ..entry }
            }
            _ => User {
                name: uid.to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: PathBuf::from("/"),
            },
        }
    }

    /// Whether this is the user this process runs as: then its commands keep the drone's ids.
    pub fn is_this_process(&self) -> bool {
        // SAFETY: neither call has preconditions or can fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        self.uid == uid && self.gid == gid
    }
}

/// The user `--run-as` names, or the default for a drone run as this process's user.
pub fn run_as(name: Option<&str>) -> Result<User, String> {
    match name {
        Some(name) => User::named(name),
        // SAFETY: no preconditions; cannot fail.
        None if unsafe { libc::geteuid() } == 0 => User::named(ROOT_DEFAULT_USER),
        None => Ok(User::of_this_process()),
    }
}

/// Runs a `getpw*_r` call with a buffer that grows until the entry fits; the entry found, if
/// any, with no groups yet.
fn lookup(
    mut call: impl FnMut(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> io::Result<Option<User>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: a passwd is plain data; zeroed is a valid value for the call to fill.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let status = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if status == libc::ERANGE && size < MAX_LOOKUP_BYTES {
            size *= 2;
            continue;
        }
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status));
        }
        if found.is_null() {
            return Ok(None);
        }
        // SAFETY: the call filled `pwd`, whose strings point into `buf`, still alive here.
        let text = |ptr: *const libc::c_char| {
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned()
        };
        return Ok(Some(User {
            name: text(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            groups: Vec::new(),
            home: PathBuf::from(text(pwd.pw_dir)),
        }));
    }
}

/// The groups of the user `name` whose primary group is `gid`.
fn groups_of(name: &CStr, gid: u32) -> Result<Vec<u32>, String> {
    let mut count: libc::c_int = 16;
    loop {
        let mut groups = vec![0 as libc::gid_t; count as usize];
        let asked = count;
        // SAFETY: `groups` holds `count` entries, and the call writes at most that many.
        let found =
            unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if found >= 0 {
            groups.truncate(count as usize);
            return Ok(groups);
        }
        if count <= asked || count as usize > MAX_LOOKUP_BYTES {
            return Err(format!(
                "cannot list the groups of {:?}",
                name.to_string_lossy()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_name_with_their_groups_and_home() {
        let root = User::named("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert!(root.home.is_absolute());
        let err = User::named("hive-no-such-user").unwrap_err();
        assert_eq!(err, "no user is named \"hive-no-such-user\"");
        assert!(User::named("a\0b").is_err());
        let me = User::of_this_process();
        assert!(me.is_this_process());
    }
}
