//! Validation of the `host:port` addresses drones give the queen.
//!
//! The queen builds URLs (`http://{address}/healthz`) from what a drone sends to `/register`, so an
//! address must be exactly a host and a port and nothing else: no scheme, path, query, fragment or
//! credentials that could steer those URLs somewhere else.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest accepted address: a 253-character DNS name, `:` and a 5-digit port.
pub const MAX_ADDRESS_LEN: usize = 253 + 1 + 5;

/// Checks that `address` is `host:port`, where host is an IPv4 address, a bracketed IPv6 address or a
/// DNS name, and port is 1–65535. Returns a reason a person can act on when it is not.
pub fn validate(address: &str) -> Result<(), String> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(format!(
            "address is longer than {MAX_ADDRESS_LEN} characters"
        ));
    }
    if address.contains("://") {
        return Err(format!(
            "address {address:?} has a scheme: an address is host:port alone, like 127.0.0.1:5001"
        ));
    }
    if address.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "address {address:?} has more than a host and a port: an address is host:port alone, like 127.0.0.1:5001"
        ));
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address {address:?} is not host:port (like 127.0.0.1:5001)"))?;
    validate_port(port).map_err(|why| format!("address {address:?}: {why}"))?;
    validate_host(host).map_err(|why| format!("address {address:?}: {why}"))
}

fn validate_port(port: &str) -> Result<(), String> {
    let digits_only =
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u32>() {
        Ok(n) if digits_only && (1..=65535).contains(&n) => Ok(()),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

fn validate_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{host:?} is not an IPv6 address"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if is_dns_name(host) {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is not an IPv4 address, a bracketed IPv6 address or a DNS name"
        ))
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens, 1–63 characters
/// each, 253 in all. The last label may not be all digits, so `999.1.1.1` is not taken for a name.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let last_label_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    host.split('.').all(label_ok) && !last_label_numeric
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_real_host_port_pairs() {
        for ok in [
            "127.0.0.1:5001",
            "10.1.2.3:1",
            "[::1]:8080",
            "[fe80::1]:65535",
            "localhost:5001",
            "drone-7.hive.example:80",
            "a.b.c.:443",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_anything_that_could_steer_a_url() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:+80",
            "127.0.0.1:80 ",
            "evil.example/x#:80",
            "evil.example/x#",
            "http://127.0.0.1:80",
            "127.0.0.1:80/admin?",
            "user@127.0.0.1:80",
            "::1:80",
            "[::1:80",
            "[not-v6]:80",
            "999.1.1.1:80",
            "-bad.example:80",
            "bad-.example:80",
            "a..b:80",
            "exa mple:80",
            "ünicode.example:80",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_scheme_or_a_path_is_named_as_the_mistake() {
        let err = validate("http://evil/x").unwrap_err();
        assert!(
            err.contains("scheme") && err.contains("host:port alone"),
            "{err}"
        );
        let err = validate("127.0.0.1:80/admin").unwrap_err();
        assert!(err.contains("more than a host and a port"), "{err}");
    }

    #[test]
    fn refuses_overlong_addresses() {
        let long = format!("{}.example:80", "a".repeat(300));
        assert!(validate(&long).unwrap_err().contains("longer than"));
        let label = format!("{}.example:80", "a".repeat(64));
        assert!(validate(&label).is_err());
    }
}
