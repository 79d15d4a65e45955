//! The workload's `allowedHosts`: which outbound `wasi:http` requests the host sends. As on a
//! `wash host` 2.7 workload (`wash-runtime`'s `check_allowed_hosts`): an empty list denies every
//! request; `*` allows any; `host`, `host:port`, `scheme://host[:port]` and `[scheme://]*.suffix[:port]`
//! allow what they name (the host compared without case; a port, when named, must match the
//! request's, its scheme's default when the URI names none). `None` (no list given) allows
//! everything, as `wash dev` does when the workload has no `allowedHosts`.

use anyhow::{Result, bail};

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHost {
    /// `*`.
    Any,
    /// A host, or `*.suffix` when `wildcard` (`host` then holds the suffix with its dot).
    Host {
        scheme: Option<String>,
        host: String,
        wildcard: bool,
        port: Option<u16>,
    },
}

impl AllowedHost {
    /// Parses one entry; fails on a path, query or an unparsable port.
    pub fn parse(entry: &str) -> Result<AllowedHost> {
        let entry = entry.trim();
        if entry == "*" {
            return Ok(AllowedHost::Any);
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, entry),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            bail!("allowedHosts entry `{entry}`: a host policy takes no path, query or fragment");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(port) => (host, Some(port)),
                Err(_) => bail!("allowedHosts entry `{entry}`: `{port}` is not a port"),
            },
            None => (rest, None),
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(suffix) => (format!(".{suffix}"), true),
            None => (host.to_owned(), false),
        };
        if host.is_empty() || host == "." {
            bail!("allowedHosts entry `{entry}`: no host");
        }
        Ok(AllowedHost::Host {
            scheme,
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether a request to `uri` satisfies this entry.
    pub fn matches(&self, uri: &hyper::Uri) -> bool {
        let AllowedHost::Host {
            scheme,
            host,
            wildcard,
            port,
        } = self
        else {
            return true;
        };
        let Some(request_host) = uri.host().map(str::to_ascii_lowercase) else {
            return false;
        };
        let request_scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        if scheme.as_ref().is_some_and(|s| *s != request_scheme) {
            return false;
        }
        let host_ok = if *wildcard {
            request_host.len() > host.len() && request_host.ends_with(host.as_str())
        } else {
            request_host == *host
        };
        let request_port =
            uri.port_u16()
                .unwrap_or(if request_scheme == "https" { 443 } else { 80 });
        host_ok && port.is_none_or(|p| p == request_port)
    }
}

/// Whether `uri` may be sent to under `list` (`None`: no list, everything allowed).
pub fn allows(list: Option<&[AllowedHost]>, uri: &hyper::Uri) -> bool {
    list.is_none_or(|list| list.iter().any(|entry| entry.matches(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows_str(list: Option<&[&str]>, uri: &str) -> bool {
        let list: Option<Vec<AllowedHost>> =
            list.map(|l| l.iter().map(|e| AllowedHost::parse(e).unwrap()).collect());
        allows(list.as_deref(), &uri.parse().unwrap())
    }

    #[test]
    fn entries_allow_what_wash_host_allows() {
        let uri = "https://Adb-1.azuredatabricks.net/oidc/v1/token";
        assert!(allows_str(None, uri), "no list: everything");
        assert!(!allows_str(Some(&[]), uri), "an empty list denies all");
        assert!(allows_str(Some(&["*"]), uri));
        assert!(allows_str(Some(&["adb-1.azuredatabricks.net"]), uri));
        assert!(allows_str(Some(&["adb-1.azuredatabricks.net:443"]), uri));
        assert!(!allows_str(Some(&["adb-1.azuredatabricks.net:8443"]), uri));
        assert!(allows_str(
            Some(&["https://adb-1.azuredatabricks.net/"]),
            uri
        ));
        assert!(!allows_str(
            Some(&["http://adb-1.azuredatabricks.net"]),
            uri
        ));
        assert!(allows_str(Some(&["*.azuredatabricks.net"]), uri));
        assert!(!allows_str(
            Some(&["*.azuredatabricks.net"]),
            "https://azuredatabricks.net/"
        ));
        assert!(!allows_str(Some(&["example.com"]), uri));
        assert!(allows_str(
            Some(&["127.0.0.1:8080"]),
            "http://127.0.0.1:8080/x"
        ));
        assert!(!allows_str(
            Some(&["127.0.0.1:8080"]),
            "http://127.0.0.1:8081/x"
        ));
    }

    #[test]
    fn a_path_or_a_bad_port_is_refused_with_the_entry_named() {
        let e = AllowedHost::parse("https://h.example/api").unwrap_err();
        assert!(e.to_string().contains("`https://h.example/api`"), "{e}");
        let e = AllowedHost::parse("h.example:http").unwrap_err();
        assert!(e.to_string().contains("not a port"), "{e}");
    }
}
