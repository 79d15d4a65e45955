//! A string that must never be printed: tokens, client secrets, connection strings.

use std::fmt;

/// A secret string. `Debug` prints `** redacted **`; there is no `Display`.
///
/// Read the value only where it must leave the process (an HTTP header, a Postgres login)
/// with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Every call site is a place where the secret leaves our hands.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible tag for logs and cache keys (first 8 hex digits of SHA-256).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// Replaces every occurrence of each secret in `text` by `**`. Used on messages that come from
/// the host or a server before they are kept in an error, in case they echo what we sent.
pub(crate) fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        let value = secret.expose();
        // Very short values would blank out ordinary words; real secrets are long.
        if value.len() >= 8 {
            out = out.replace(value, "**");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("dapi-very-secret-value");
        assert_eq!(format!("{s:?}"), "** redacted **");
        assert!(!format!("{:?}", Some(&s)).contains("very-secret"));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let s = Secret::new("abc");
        assert_eq!(s.fingerprint(), "ba7816bf");
        assert_eq!(s.fingerprint(), Secret::new("abc").fingerprint());
    }

    #[test]
    fn scrub_removes_long_secrets_only() {
        let s = Secret::new("eyJhbGciOi.secret.token");
        let short = Secret::new("pw");
        let text = "login failed for eyJhbGciOi.secret.token with pw";
        assert_eq!(scrub(text, &[&s, &short]), "login failed for ** with pw");
    }
}
