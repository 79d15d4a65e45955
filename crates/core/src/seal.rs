//! Sealed key-value records: what the library writes to the store can be read and written only
//! by apps that hold the same workspace secret.
//!
//! The store is shared (other apps on the same Redis, scripts, backups), so a record is never
//! trusted for what it says: it is authenticated and encrypted with XChaCha20-Poly1305. The key
//! is derived with HKDF-SHA-256 from the workspace secret (the OAuth client secret, or the PAT)
//! and the cache scope (workspace URL and principal); the record's key-value key is the
//! associated data, so a sealed record moved to another key does not open either. The stored
//! value is `lb2.` followed by base64url (no padding) of the 24-byte random nonce and the
//! ciphertext with its 16-byte tag.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::Secret;

/// The prefix of every sealed value (the record format's version).
pub(crate) const PREFIX: &str = "lb2.";
const SALT: &[u8] = b"lakebase-spin sealed record v2";
const NONCE_LEN: usize = 24;
/// A sealed value larger than this is not opened (records are well under 4 KB).
const MAX_SEALED: usize = 64 * 1024;

/// Seals and opens the records of one cache scope.
pub(crate) struct Sealer {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(** key redacted **)")
    }
}

impl Sealer {
    /// The sealer of `scope` for apps holding `secret`.
    pub fn new(secret: &Secret, scope: &str) -> Sealer {
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret.expose().as_bytes());
        let mut key = [0u8; 32];
        hk.expand(scope.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        Sealer {
            aead: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// `plaintext` sealed for the key-value key `key`; `None` only if the system has no
    /// randomness to give (then nothing is cached).
    pub fn seal(&self, key: &str, plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let sealed = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: key.as_bytes(),
                },
            )
            .ok()?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        let mut out = PREFIX.as_bytes().to_vec();
        out.extend_from_slice(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(raw)
                .as_bytes(),
        );
        Some(out)
    }

    /// The plaintext of a value read from `key`, or `None` if it was not sealed by a holder
    /// of the same secret for the same key (forged, altered, moved, of another format).
    pub fn open(&self, key: &str, value: &[u8]) -> Option<Vec<u8>> {
        if value.len() > MAX_SEALED {
            return None;
        }
        let body = value.strip_prefix(PREFIX.as_bytes())?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .ok()?;
        if raw.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(secret: &str) -> Sealer {
        Sealer::new(&Secret::new(secret), "https://adb-1\nsp:c1")
    }

    #[test]
    fn round_trip_and_the_token_is_not_readable() {
        let s = sealer("client-secret-1");
        let sealed = s.seal("k1", b"{\"token\":\"eyJsecret\"}").unwrap();
        assert!(sealed.starts_with(PREFIX.as_bytes()));
        assert!(!String::from_utf8_lossy(&sealed).contains("eyJsecret"));
        assert_eq!(s.open("k1", &sealed).unwrap(), b"{\"token\":\"eyJsecret\"}");
        assert_ne!(
            s.seal("k1", b"x").unwrap(),
            s.seal("k1", b"x").unwrap(),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn another_secret_scope_or_key_cannot_open_or_forge() {
        let s = sealer("client-secret-1");
        let sealed = s.seal("k1", b"record").unwrap();
        assert!(sealer("client-secret-2").open("k1", &sealed).is_none());
        assert!(
            Sealer::new(&Secret::new("client-secret-1"), "other scope")
                .open("k1", &sealed)
                .is_none()
        );
        assert!(s.open("k2", &sealed).is_none(), "moved to another key");
        // Any change to the value is detected.
        for i in PREFIX.len()..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert!(s.open("k1", &bad).is_none(), "byte {i}");
        }
        for forged in [
            &b"{\"v\":1,\"token\":\"t\",\"host\":\"127.0.0.2\"}"[..],
            b"lb2.",
            b"lb2.AAAA",
            b"",
        ] {
            assert!(s.open("k1", forged).is_none());
        }
        assert!(s.open("k1", &vec![b'A'; MAX_SEALED + 1]).is_none());
    }
}
