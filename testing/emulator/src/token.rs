//! Database tokens: JWT-shaped (header.payload.signature, base64url), about 900 characters,
//! signed with HMAC-SHA256 under a key only this emulator knows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What a database token says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The Postgres role it logs in as.
    pub sub: String,
    /// Unique id (revocation is by id).
    pub jti: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Endpoint path or instance name it was minted for.
    pub aud: String,
    /// Filler so that tokens have the length of real ones.
    pub pad: String,
}

/// Why a password is not a valid database token.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url parts with a JSON payload: e.g. a workspace token or PAT.
    NotJwt,
    /// Signature does not match.
    BadSignature,
}

pub fn sign(key: &[u8], claims: &Claims) -> String {
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT","kid":"lakebase-emulator"}"#);
    let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        B64.encode(mac.finalize().into_bytes())
    )
}

pub fn verify(key: &[u8], token: &str) -> Result<Claims, Invalid> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(Invalid::NotJwt);
    }
    let payload = B64.decode(parts[1]).map_err(|_| Invalid::NotJwt)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| Invalid::NotJwt)?;
    let signature = B64.decode(parts[2]).map_err(|_| Invalid::BadSignature)?;
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| Invalid::BadSignature)?;
    Ok(claims)
}

/// First 12 hex digits of SHA-256: how logs name a token.
pub fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: "role".into(),
            jti: "id".into(),
            iat: 1,
            exp: 2,
            aud: "projects/p/branches/b/endpoints/e".into(),
            pad: "x".repeat(560),
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let t = sign(b"k", &claims());
        assert!((850..1000).contains(&t.len()), "{}", t.len());
        assert_eq!(verify(b"k", &t).unwrap().sub, "role");
        assert_eq!(verify(b"other", &t).unwrap_err(), Invalid::BadSignature);
        assert_eq!(verify(b"k", "dapi123").unwrap_err(), Invalid::NotJwt);
    }
}
