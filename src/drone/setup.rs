//! How a drone runs commands, decided once at start: what contains its attempts, the user they
//! run as and the environment they get (see `exec/`). Every mistake here stops the drone with the
//! reason (exit 2); a choice that protects less than it could is said once, at WARN.

use std::path::Path;

use log::{info, warn};

use crate::auth::Token;
use crate::config::DroneConfig;
use crate::exec::{self, BaseEnv, Containment, Executor, Settings, user};

/// The executor's settings for a drone configured by `config` with its work root at `root`
/// and the cluster token `token`.
pub fn settings(
    config: &DroneConfig,
    root: &Path,
    token: Option<&Token>,
) -> Result<Settings, String> {
    let user = user::run_as(config.run_as.as_deref()).map_err(|why| format!("--run-as: {why}"))?;
    let secret = token.and_then(|token| token.header().strip_prefix("Bearer "));
    for name in &config.pass_env {
        let value = std::env::var_os(name).unwrap_or_default();
        if secret.is_some_and(|secret| value.to_string_lossy().contains(secret)) {
            return Err(format!(
                "--pass-env {name}: its value holds the cluster token, which no task may see"
            ));
        }
    }
    let env = BaseEnv::from(std::env::vars_os(), &config.pass_env);
    let absolute = std::path::absolute(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let drone_group = exec::drone_group_name(&absolute);
    let (containment, fell_back) = Containment::set_up(
        config.containment,
        config.cgroup_parent.as_deref(),
        &drone_group,
    )
    .map_err(|why| format!("--containment cgroup: {why}"))?;
    if let Some(why) = fell_back {
        warn!(
            "attempts run in process groups, not cgroups: {why}. They have no memory, cpu or pids limits, and a process that calls setsid outlives its attempt (run the drone as root, or give --cgroup-parent a delegated cgroup)"
        );
    }
    if config.containment == exec::Mode::ProcessGroup {
        warn!(
            "attempts run in process groups (--containment process-group): they have no memory, cpu or pids limits, and a process that calls setsid outlives its attempt"
        );
    }
    Ok(Settings {
        containment,
        user: Some(user),
        env,
    })
}

/// Says once how the drone runs commands, and what that leaves open.
pub fn announce(executor: &Executor, slots: u32, (memory_mb, cpus): (u64, f64), root: &Path) {
    let user = executor.user();
    let level = executor.level();
    info!(
        "drone runs commands in {slots} slots ({memory_mb} MiB and {cpus} cpus to share), as {} (uid {}), contained by {level}, in fresh directories under {}",
        user.name,
        user.uid,
        root.display()
    );
    if user.is_this_process() {
        warn!(
            "tasks run as this drone's own user {}: they may read its token file and work root and signal it (run the drone as root, or give --run-as another user)",
            user.name
        );
    }
}
