//! Reading flags, for the daemon's command line and the client's alike: one way to read a flag's
//! value and name it in a mistake, and the values both take (addresses, paths, counts, the token).

use std::path::PathBuf;

use crate::address;
use crate::auth::Token;

/// The value of flag `name`, if given, read by `parse`. A mistake names the flag, then says what is
/// wrong with the value, once: `--port: "abc" is not a port (0-65535)`.
pub(super) fn flag<T>(
    args: &mut pico_args::Arguments,
    name: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    let given: Option<String> = args
        .opt_value_from_str(name)
        .map_err(|e| format!("{name}: {}", flag_error(e)))?;
    given
        .map(|value| parse(&value).map_err(|why| format!("{name}: {why}")))
        .transpose()
}

/// The cluster token, from `--token-file` or `HIVE_TOKEN` (never both), if there is one.
pub(super) fn token(
    file: Option<PathBuf>,
    env_token: Option<String>,
) -> Result<Option<Token>, String> {
    match (file, env_token.filter(|t| !t.is_empty())) {
        (Some(_), Some(_)) => {
            Err("both --token-file and HIVE_TOKEN are set; give the token one way".into())
        }
        (Some(path), None) => Ok(Some(Token::from_file(&path)?)),
        (None, Some(secret)) => Token::new(&secret)
            .map(Some)
            .map_err(|why| format!("HIVE_TOKEN: {why}")),
        (None, None) => Ok(None),
    }
}

pub(super) fn flag_error(e: pico_args::Error) -> String {
    match e {
        pico_args::Error::Utf8ArgumentParsingFailed { value, .. } => {
            format!("{value:?} is not UTF-8")
        }
        pico_args::Error::OptionWithoutAValue(_) => "needs a value".into(),
        other => other.to_string(),
    }
}

/// A whole number from `low` to `high`.
pub(super) fn parse_count(s: &str, low: usize, high: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a whole number ({low}-{high})")),
    }
}

pub(super) fn parse_text(s: &str) -> Result<String, String> {
    Ok(s.to_string())
}

pub(super) fn parse_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

pub(super) fn parse_address(s: &str) -> Result<String, String> {
    address::validate(s).map(|()| s.to_string())
}

/// `host:port[,host:port...]`, no duplicates.
pub(super) fn parse_address_list(s: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = s.split(',').map(parse_address).collect::<Result<_, _>>()?;
    unique(list)
}

pub(super) fn unique(list: Vec<String>) -> Result<Vec<String>, String> {
    for (i, item) in list.iter().enumerate() {
        if list[..i].contains(item) {
            return Err(format!("{item:?} is listed twice"));
        }
    }
    Ok(list)
}
