//! What a drone finds out about itself, for its queens to place by: its own labels, `hive.os`,
//! `hive.arch`, `hive.hostname`, `hive.cpus` and `hive.memory_mb` (see `labels.rs`), found once at
//! start. The cpus and memory are what it offers tasks (see `capacity.rs`), so a constraint on them
//! means what placement counts.

use log::debug;

use crate::labels::{self, Labels};

/// This drone's own labels, for an offer of `memory_mb` MiB and `cpus` cpus.
pub fn own_labels((memory_mb, cpus): (u64, f64)) -> Labels {
    let mut labels = Labels::new();
    let mut add = |key: &str, value: String| {
        if labels::valid(&value) {
            labels.insert(key.to_string(), value);
        } else {
            debug!("no {key} label: {value:?} is not {}", labels::ALPHABET);
        }
    };
    add("hive.os", std::env::consts::OS.to_string());
    add("hive.arch", std::env::consts::ARCH.to_string());
    if let Some(hostname) = hostname() {
        add("hive.hostname", hostname);
    }
    add("hive.cpus", cpus.to_string());
    add("hive.memory_mb", memory_mb.to_string());
    labels
}

/// The machine's host name, if it has one.
fn hostname() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `buffer.len()` bytes into the buffer it is given.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    std::str::from_utf8(&buffer[..end])
        .ok()
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drone_labels_itself_with_what_it_offers_and_where_it_runs() {
        let labels = own_labels((2048, 1.5));
        assert_eq!(labels["hive.os"], std::env::consts::OS);
        assert_eq!(labels["hive.arch"], std::env::consts::ARCH);
        assert_eq!(
            (
                labels["hive.cpus"].as_str(),
                labels["hive.memory_mb"].as_str()
            ),
            ("1.5", "2048")
        );
        assert_eq!(own_labels((512, 2.0))["hive.cpus"], "2");
        assert!(labels::check(&labels).is_ok(), "{labels:?}");
    }
}
