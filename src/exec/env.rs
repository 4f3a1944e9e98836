//! An attempt's environment, built rather than inherited: a drone's environment holds its own
//! secrets (`HIVE_TOKEN`, a cloud key its operator exported) and nothing of it reaches a task
//! unless named.
//!
//! A command gets, in this order, each later one replacing an earlier one of the same name:
//! - from the drone's environment: `PATH` (or a plain default when it has none), `LANG`, `LC_*`,
//!   `TZ`, and each variable `--pass-env` names;
//! - `HOME`, the home of the user it runs as, and `TMPDIR`, its attempt's directory;
//! - its task's `env`;
//! - `HIVE_TASK_ID`, `HIVE_ATTEMPT`, `HIVE_ATTEMPT_ID` and `HIVE_DRONE_ADDRESS`, which a task's
//!   `env` cannot forge.
//!
//! No `HIVE_` variable of the drone's is ever passed: `--pass-env` refuses such names at start
//! (see `cli.rs`), and the drone refuses to pass one whose value holds its cluster token.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use super::Spec;
use super::user::User;

/// `PATH` for a drone that has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The drone's variables every command gets, when the drone has them.
const ALLOWED: [&str; 3] = ["PATH", "LANG", "TZ"];

/// What of the drone's environment its commands get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseEnv {
    vars: Vec<(OsString, OsString)>,
}

impl Default for BaseEnv {
    /// Nothing of the drone's: a plain `PATH` alone.
    fn default() -> BaseEnv {
        BaseEnv::from(Vec::new(), &[])
    }
}

impl BaseEnv {
    /// The drone's allowed variables from `drone` (its environment), and those named in `pass`.
    pub fn from(drone: impl IntoIterator<Item = (OsString, OsString)>, pass: &[String]) -> BaseEnv {
        let mut vars: Vec<(OsString, OsString)> = drone
            .into_iter()
            .filter(|(name, _)| {
                let name = name.to_string_lossy();
                ALLOWED.contains(&name.as_ref())
                    || name.starts_with("LC_")
                    || pass.iter().any(|passed| *passed == name)
            })
            .collect();
        if !vars.iter().any(|(name, _)| name == "PATH") {
            vars.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        vars.sort();
        BaseEnv { vars }
    }

    /// The whole environment of `spec`'s command, run as `user` in `dir`.
    pub(super) fn for_attempt<'a>(
        &'a self,
        spec: &'a Spec,
        user: &'a User,
        dir: &'a Path,
    ) -> impl Iterator<Item = (&'a OsStr, OsString)> {
        let base = self
            .vars
            .iter()
            .map(|(name, value)| (name.as_os_str(), value.clone()));
        let own = [
            (OsStr::new("HOME"), user.home.clone().into_os_string()),
            (OsStr::new("TMPDIR"), dir.as_os_str().to_owned()),
        ];
        let task = spec
            .env
            .iter()
            .map(|(name, value)| (OsStr::new(name.as_str()), OsString::from(value)));
        let hive = [
            (OsStr::new("HIVE_TASK_ID"), OsString::from(&spec.task)),
            (OsStr::new("HIVE_ATTEMPT"), spec.attempt.to_string().into()),
            (OsStr::new("HIVE_ATTEMPT_ID"), OsString::from(&spec.id)),
            (
                OsStr::new("HIVE_DRONE_ADDRESS"),
                OsString::from(&spec.drone_address),
            ),
        ];
        base.chain(own).chain(task).chain(hive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_and_passed_variables_of_the_drone_are_kept() {
        let drone = [
            ("PATH", "/bin"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "en_GB"),
            ("HIVE_TOKEN", "secret-secret-secret"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("HOME", "/root"),
            ("TMPDIR", "/var/tmp"),
            ("PROXY", "http://proxy"),
        ]
        .map(|(n, v)| (OsString::from(n), OsString::from(v)));
        let base = BaseEnv::from(drone, &["PROXY".into()]);
        let names: Vec<String> = base
            .vars
            .iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["LANG", "LC_TIME", "PATH", "PROXY"]);
        let bare = BaseEnv::from(Vec::new(), &[]);
        assert_eq!(bare.vars, [("PATH".into(), DEFAULT_PATH.into())]);
    }
}
