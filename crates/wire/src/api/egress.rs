//! An interactive sandbox's egress allow-list: the hosts and ports it may open connections to
//! (through its node's egress proxy; nothing else leaves the sandbox). A rule is `HOST[:PORT]`:
//! HOST a DNS name (`pypi.org`), a wildcard over a domain's subdomains (`*.github.com`, not
//! `github.com` itself), or an IP address (`203.0.113.7`, `[2001:db8::1]`); PORT 443 when not
//! given. Names match without regard to case and to a trailing dot.

use std::fmt;
use std::net::IpAddr;

/// The most rules one sandbox may have.
pub const MAX_EGRESS_RULES: usize = 64;

/// The port a rule that names none allows.
pub const DEFAULT_EGRESS_PORT: u16 = 443;

/// What a rule's host part matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// Any name below this domain (`*.example.com`: `a.example.com`, `a.b.example.com`).
    Below(String),
    /// This address.
    Ip(IpAddr),
}

/// One allowed destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressRule {
    /// The host or hosts.
    pub host: HostPattern,
    /// The port.
    pub port: u16,
}

impl EgressRule {
    /// Reads `HOST[:PORT]` (see the module documentation); the error says what is wrong.
    pub fn parse(text: &str) -> Result<EgressRule, String> {
        if text.len() > 262 {
            return Err("longer than 262 characters".into());
        }
        let (host, port) = split_port(text)?;
        let port = match port {
            None => DEFAULT_EGRESS_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("port '{p}' is not 1..=65535")),
            },
        };
        let host = if let Some(ip) = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .or(Some(host))
            .and_then(|h| h.parse::<IpAddr>().ok())
        {
            HostPattern::Ip(ip)
        } else if let Some(domain) = host.strip_prefix("*.") {
            HostPattern::Below(dns_name(domain)?)
        } else {
            HostPattern::Name(dns_name(host)?)
        };
        Ok(EgressRule { host, port })
    }

    /// Whether a connection to `host` (a name or an address, as a client asked for it) on
    /// `port` is allowed by this rule.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match &self.host {
            HostPattern::Ip(ip) => bare.parse::<IpAddr>().is_ok_and(|a| a == *ip),
            HostPattern::Name(name) => normal(bare).is_some_and(|h| h == *name),
            HostPattern::Below(domain) => normal(bare).is_some_and(|h| {
                h.len() > domain.len() + 1
                    && h.ends_with(domain.as_str())
                    && h.as_bytes()[h.len() - domain.len() - 1] == b'.'
            }),
        }
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Name(n) => write!(f, "{n}:{}", self.port),
            HostPattern::Below(d) => write!(f, "*.{d}:{}", self.port),
            HostPattern::Ip(IpAddr::V4(a)) => write!(f, "{a}:{}", self.port),
            HostPattern::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// `HOST[:PORT]` split; an IPv6 address must be in brackets to carry a port.
fn split_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("'[' without its ']'".into());
        };
        let host = &text[..end + 2];
        return match &text[end + 2..] {
            "" => Ok((host, None)),
            tail => match tail.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("'{tail}' after the address")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => text
            .split_once(':')
            .map(|(h, p)| (h, Some(p)))
            .ok_or_else(|| "no port".to_string()),
        // A bare IPv6 address, no port.
        _ => Ok((text, None)),
    }
}

/// `name` as a DNS name in lower case without its trailing dot, or why it is not one.
fn dns_name(name: &str) -> Result<String, String> {
    normal(name).ok_or_else(|| {
        format!(
            "'{}' is not a host name (labels of letters, digits and '-', 1 to 63 characters \
             each, joined by '.')",
            name.chars().take(64).collect::<String>()
        )
    })
}

fn normal(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rules_read_and_match_as_written() {
        let r = EgressRule::parse("PyPI.org").unwrap();
        assert_eq!(r.to_string(), "pypi.org:443");
        assert!(r.allows("pypi.org", 443) && r.allows("pypi.org.", 443));
        assert!(!r.allows("pypi.org", 80) && !r.allows("x.pypi.org", 443));
        let w = EgressRule::parse("*.github.com:22").unwrap();
        assert!(w.allows("api.github.com", 22) && w.allows("a.b.github.com", 22));
        assert!(!w.allows("github.com", 22) && !w.allows("evilgithub.com", 22));
        let ip = EgressRule::parse("127.0.0.1:8080").unwrap();
        assert!(ip.allows("127.0.0.1", 8080) && !ip.allows("127.0.0.2", 8080));
        let v6 = EgressRule::parse("[2001:db8::1]:8443").unwrap();
        assert_eq!(v6.to_string(), "[2001:db8::1]:8443");
        assert!(v6.allows("[2001:db8::1]", 8443));
        assert_eq!(
            EgressRule::parse("2001:db8::1").unwrap().port,
            DEFAULT_EGRESS_PORT
        );
        for bad in [
            "", "a b", "x:0", "x:65536", "x:", "-a.com", "*.", "[::1", "[::1]x", "a..b",
        ] {
            assert!(EgressRule::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_is_read_or_refused_and_a_rule_reads_back_as_itself(text in ".{0,300}") {
            if let Ok(rule) = EgressRule::parse(&text) {
                prop_assert_eq!(EgressRule::parse(&rule.to_string()).unwrap(), rule);
            }
        }

        #[test]
        fn a_name_rule_allows_its_name_and_port_only(
            name in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z][a-z0-9]{0,10}){0,3}",
            port in 1u16..,
            other in 1u16..,
        ) {
            let rule = EgressRule::parse(&format!("{name}:{port}")).unwrap();
            prop_assert!(rule.allows(&name.to_uppercase(), port));
            prop_assert_eq!(rule.allows(&name, other), other == port);
            let longer = format!("x{}", name);
            prop_assert!(!rule.allows(&longer, port));
        }
    }
}
