//! Labels and constraints: what a drone says it is, and what a task asks of the drone it runs on,
//! as Nomad's node attributes and constraints, or Kubernetes' node labels and selectors, do.
//!
//! A **label** is `KEY=VALUE` on a drone: `zone=eu`, `gpu=a100`. Keys and values are 1 to 63
//! characters of `A-Z a-z 0-9 . _ / -`, so they are safe in a URL's query, a log line and a table
//! without quoting. Keys under `hive.` are Hive's own: a drone finds `hive.os`, `hive.arch`,
//! `hive.hostname`, `hive.cpus` and `hive.memory_mb` itself, and the queen adds `hive.name` (the
//! drone's name, [`NAME_LABEL`]), so a constraint can pin a task to one drone. `--label` sets
//! none of them.
//!
//! A **constraint** is one of `KEY=VALUE` (the drone has that label with that value), `KEY!=VALUE`
//! (it has not: another value, or no such label) and `KEY` (it has the label, any value). A task
//! runs only on a drone that meets all of its constraints. A constraint is parsed once, when the
//! task is submitted, into a [`Constraint`]; the store and the API keep it as the text it was
//! written in.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A drone's labels, by key.
pub type Labels = BTreeMap<String, String>;

/// Longest label key or value.
pub const MAX_LABEL_CHARS: usize = 63;

/// Labels one drone may have, its own `hive.*` ones included: far more than anyone sorts a fleet
/// by, few enough that matching one drone stays a handful of lookups.
pub const MAX_LABELS: usize = 64;

/// Constraints one task may carry.
pub const MAX_CONSTRAINTS: usize = 32;

/// Keys starting so are Hive's: a drone finds them, or the queen adds them.
pub const RESERVED_PREFIX: &str = "hive.";

/// The label the queen gives every drone: its name (`drone-3`).
pub const NAME_LABEL: &str = "hive.name";

/// What a key or a value may hold, said in every refusal.
pub const ALPHABET: &str = "1 to 63 of A-Z a-z 0-9 . _ / -";

/// Whether `text` may be a label key or value.
pub fn valid(text: &str) -> bool {
    (1..=MAX_LABEL_CHARS).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
}

/// `text` as the key or value (`part`) of a label, or why not.
fn part(part: &str, text: &str) -> Result<(), String> {
    if valid(text) {
        Ok(())
    } else {
        Err(format!("the {part} {text:?} is not {ALPHABET}"))
    }
}

/// Why `labels` (from a drone's registration, or the store) cannot be a drone's, if they cannot:
/// a key or value out of the alphabet, or too many.
pub fn check(labels: &Labels) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels; a drone has at most {MAX_LABELS}",
            labels.len()
        ));
    }
    for (key, value) in labels {
        part("key", key)?;
        part("value", value).map_err(|why| format!("{key}: {why}"))?;
    }
    Ok(())
}

/// A label a user gives a drone (`--label zone=eu`): `KEY=VALUE`, the key not Hive's own.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    part("key", key)?;
    part("value", value)?;
    if key.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "{key} is Hive's own: a drone finds hive.os, hive.arch, hive.hostname, hive.cpus and hive.memory_mb itself, and the queen names it (hive.name)"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// One thing a task asks of the drone it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Constraint {
    /// `KEY=VALUE`: the drone has the label with that value.
    Equals { key: String, value: String },
    /// `KEY!=VALUE`: the drone has not (another value, or no such label).
    NotEquals { key: String, value: String },
    /// `KEY`: the drone has the label, whatever its value.
    Present { key: String },
}

impl Constraint {
    /// The constraint that holds on the drone named `name` alone (see [`NAME_LABEL`]).
    pub fn on_drone(name: &str) -> Constraint {
        Constraint::Equals {
            key: NAME_LABEL.to_string(),
            value: name.to_string(),
        }
    }

    /// Whether a drone labelled `labels` meets it.
    pub fn holds(&self, labels: &Labels) -> bool {
        match self {
            Constraint::Equals { key, value } => labels.get(key) == Some(value),
            Constraint::NotEquals { key, value } => labels.get(key) != Some(value),
            Constraint::Present { key } => labels.contains_key(key),
        }
    }
}

/// Whether a drone labelled `labels` meets every one of `constraints`.
pub fn all_hold(constraints: &[Constraint], labels: &Labels) -> bool {
    constraints
        .iter()
        .all(|constraint| constraint.holds(labels))
}

impl FromStr for Constraint {
    type Err = String;

    /// `KEY=VALUE`, `KEY!=VALUE` or `KEY`; a mistake names the part that is wrong.
    fn from_str(text: &str) -> Result<Constraint, String> {
        let constraint = if let Some((key, value)) = text.split_once("!=") {
            Constraint::NotEquals {
                key: key.to_string(),
                value: value.to_string(),
            }
        } else if let Some((key, value)) = text.split_once('=') {
            Constraint::Equals {
                key: key.to_string(),
                value: value.to_string(),
            }
        } else {
            Constraint::Present {
                key: text.to_string(),
            }
        };
        let in_it =
            |why: String| format!("{text:?}: {why} (a constraint is KEY, KEY=VALUE or KEY!=VALUE)");
        match &constraint {
            Constraint::Equals { key, value } | Constraint::NotEquals { key, value } => {
                part("key", key).map_err(in_it)?;
                part("value", value).map_err(in_it)?;
            }
            Constraint::Present { key } => part("key", key).map_err(in_it)?,
        }
        Ok(constraint)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Equals { key, value } => write!(f, "{key}={value}"),
            Constraint::NotEquals { key, value } => write!(f, "{key}!={value}"),
            Constraint::Present { key } => write!(f, "{key}"),
        }
    }
}

/// Kept and shown as the text it was written in.
impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Constraint, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `constraints` as a list a person reads: `zone=eu, gpu`.
pub fn listed(constraints: &[Constraint]) -> String {
    constraints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn constraints_parse_into_their_three_forms_and_print_back() {
        for (text, parsed) in [
            (
                "zone=eu",
                Constraint::Equals {
                    key: "zone".into(),
                    value: "eu".into(),
                },
            ),
            (
                "hive.arch!=aarch64",
                Constraint::NotEquals {
                    key: "hive.arch".into(),
                    value: "aarch64".into(),
                },
            ),
            ("gpu", Constraint::Present { key: "gpu".into() }),
            (
                "example.com/rack=r-7_b",
                Constraint::Equals {
                    key: "example.com/rack".into(),
                    value: "r-7_b".into(),
                },
            ),
        ] {
            assert_eq!(text.parse::<Constraint>(), Ok(parsed.clone()), "{text}");
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn a_constraint_that_does_not_parse_names_the_part() {
        for (text, needle) in [
            ("", "the key \"\""),
            ("zone=", "the value \"\""),
            ("=eu", "the key \"\""),
            ("zone==eu", "the value \"=eu\""),
            ("zone=e u", "the value \"e u\""),
            ("zone!=", "the value \"\""),
            ("zo ne", "the key \"zo ne\""),
            ("zone=é", "the value \"é\""),
            (&format!("k={}", "v".repeat(64)), "the value"),
            (&"k".repeat(64), "the key"),
        ] {
            let err = text.parse::<Constraint>().unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
            assert!(err.contains("KEY=VALUE"), "{err}");
        }
    }

    #[test]
    fn constraints_hold_as_written_and_a_missing_label_is_not_equal() {
        let drone = labels(&[("zone", "eu"), ("gpu", "a100"), ("hive.arch", "x86_64")]);
        let holds = |text: &str| text.parse::<Constraint>().unwrap().holds(&drone);
        assert!(holds("zone=eu") && !holds("zone=us"));
        assert!(holds("gpu") && !holds("ssd"));
        assert!(holds("hive.arch!=aarch64") && !holds("hive.arch!=x86_64"));
        assert!(
            holds("ssd!=yes"),
            "a drone without the label has not that value"
        );
        let all: Vec<Constraint> = ["zone=eu", "gpu", "hive.arch!=aarch64"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        assert!(all_hold(&all, &drone));
        assert!(!all_hold(&all, &labels(&[("zone", "eu")])));
        assert!(all_hold(&[], &Labels::new()), "no constraint: every drone");
        assert_eq!(listed(&all), "zone=eu, gpu, hive.arch!=aarch64");
    }

    #[test]
    fn constraints_travel_as_their_text() {
        let constraint = Constraint::on_drone("drone-3");
        let json = serde_json::to_string(&constraint).unwrap();
        assert_eq!(json, r#""hive.name=drone-3""#);
        assert_eq!(
            serde_json::from_str::<Constraint>(&json).unwrap(),
            constraint
        );
        assert!(serde_json::from_str::<Constraint>(r#""a b""#).is_err());
    }

    #[test]
    fn a_user_label_is_key_value_in_the_alphabet_and_not_hive_s() {
        assert_eq!(
            parse_label("zone=eu"),
            Ok(("zone".to_string(), "eu".to_string()))
        );
        for (text, needle) in [
            ("zone", "not KEY=VALUE"),
            ("zone=", "the value \"\""),
            ("zo ne=eu", "the key \"zo ne\""),
            ("zone=e=u", "the value \"e=u\""),
            ("hive.os=plan9", "Hive's own"),
        ] {
            let err = parse_label(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
        let many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(check(&many).unwrap_err().contains("at most"));
        assert!(
            check(&labels(&[("ok", "bad value")]))
                .unwrap_err()
                .contains("ok:")
        );
        assert_eq!(check(&labels(&[("hive.os", "linux")])), Ok(()));
    }
}
