//! Key-value records: the shared credential, the workspace token, and a best-effort mint lease.
//!
//! Keys are `lakebase:v1:<what>:<32 hex digits>`: short (well under SQLite's 256 bytes) and free of
//! `/ \ ? #` (Azure Cosmos), whatever the endpoint name. The hash covers everything that makes a
//! credential different (workspace, identity, endpoint, user, host, database), so two apps or
//! endpoints that share a store never read each other's tokens.
//!
//! A record that cannot be read (corrupt, another version) is a miss. A store that fails is
//! logged and bypassed: the caller then mints, as if the cache were empty.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, Target, WorkspaceAuth};
use crate::credential::{Credential, CredentialRecord};
use crate::host::Kv;
use crate::log;
use crate::secret::Secret;

/// The keys of one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CacheKeys {
    pub credential: String,
    pub lease: String,
    pub workspace_token: String,
}

impl CacheKeys {
    pub fn new(config: &Config) -> Self {
        let identity = match &config.auth {
            WorkspaceAuth::OAuthM2M { client_id, .. } => format!("sp:{client_id}"),
            // The PAT itself never enters a key: only its fingerprint does, inside a hash.
            WorkspaceAuth::Pat(token) => format!("pat:{}", token.fingerprint()),
        };
        let target = match &config.target {
            Target::Endpoint(e) => format!("endpoint:{e}"),
            Target::Instance(i) => format!("instance:{i}"),
        };
        let scope = [
            config.workspace.as_str(),
            &identity,
            &target,
            config.pguser.as_deref().unwrap_or(""),
            config.pghost.as_deref().unwrap_or(""),
            &config.pgport.to_string(),
            &config.pgdatabase,
        ]
        .join("\n");
        let ws_scope = [config.workspace.as_str(), &identity].join("\n");
        CacheKeys {
            credential: format!("lakebase:v1:cred:{}", short_hash(&scope)),
            lease: format!("lakebase:v1:lease:{}", short_hash(&scope)),
            workspace_token: format!("lakebase:v1:ws:{}", short_hash(&ws_scope)),
        }
    }
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a JSON record; `None` on absence, corruption or store failure (logged).
async fn read_json<T: for<'de> Deserialize<'de>>(kv: &impl Kv, key: &str, what: &str) -> Option<T> {
    match kv.get(key).await {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(_) => {
                log::warn(&format!(
                    "ignoring unreadable {what} record in key-value store"
                ));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            log::warn(&format!(
                "key-value read of {what} failed, bypassing cache: {e}"
            ));
            None
        }
    }
}

async fn write_json(kv: &impl Kv, key: &str, value: &impl Serialize, what: &str) {
    let bytes = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(_) => return,
    };
    if let Err(e) = kv.set(key, &bytes).await {
        log::warn(&format!(
            "key-value write of {what} failed, continuing without cache: {e}"
        ));
    }
}

pub(crate) async fn delete(kv: &impl Kv, key: &str, what: &str) {
    if let Err(e) = kv.delete(key).await {
        log::warn(&format!("key-value delete of {what} failed: {e}"));
    }
}

pub(crate) async fn read_credential(kv: &impl Kv, key: &str) -> Option<Credential> {
    read_json::<CredentialRecord>(kv, key, "credential")
        .await?
        .into_credential()
}

pub(crate) async fn write_credential(kv: &impl Kv, key: &str, credential: &Credential) {
    write_json(
        kv,
        key,
        &CredentialRecord::from_credential(credential),
        "credential",
    )
    .await
}

/// A cached OAuth workspace token.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkspaceTokenRecord {
    pub v: u32,
    pub token: String,
    /// Unix seconds after which it is not used.
    pub until: i64,
}

pub(crate) async fn read_workspace_token(
    kv: &impl Kv,
    key: &str,
) -> Option<(Secret, DateTime<Utc>)> {
    let r: WorkspaceTokenRecord = read_json(kv, key, "workspace token").await?;
    if r.v != 1 || r.token.is_empty() {
        return None;
    }
    Some((Secret::new(r.token), DateTime::from_timestamp(r.until, 0)?))
}

pub(crate) async fn write_workspace_token(
    kv: &impl Kv,
    key: &str,
    token: &Secret,
    until: DateTime<Utc>,
) {
    let record = WorkspaceTokenRecord {
        v: 1,
        token: token.expose().to_owned(),
        until: until.timestamp(),
    };
    write_json(kv, key, &record, "workspace token").await
}

/// "Instance `holder` is minting until `until`": lets other instances wait for its record
/// instead of minting too. Best effort only: the store has no compare-and-swap, so two instances
/// may both mint, which is harmless (Lakebase tokens coexist).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub holder: String,
    /// Unix milliseconds.
    pub until_ms: i64,
}

pub(crate) async fn read_lease(kv: &impl Kv, key: &str) -> Option<Lease> {
    read_json(kv, key, "mint lease").await
}

pub(crate) async fn write_lease(kv: &impl Kv, key: &str, lease: &Lease) {
    write_json(kv, key, lease, "mint lease").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn config(endpoint: &str, user: Option<&str>) -> Config {
        RawConfig {
            host: Some("adb-1.cloud.databricks.com".into()),
            client_id: Some("c1".into()),
            client_secret: Some("s1".into()),
            endpoint: Some(endpoint.into()),
            pguser: user.map(str::to_owned),
            ..RawConfig::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn keys_are_short_and_safe_for_every_backend() {
        let long = format!("projects/{}/branches/b/endpoints/e", "p".repeat(300));
        let k = CacheKeys::new(&config(&long, None));
        for key in [&k.credential, &k.lease, &k.workspace_token] {
            assert!(key.len() <= 64, "{key}");
            assert!(!key.contains(['/', '\\', '?', '#']), "{key}");
        }
    }

    #[test]
    fn keys_separate_endpoints_and_users() {
        let a = CacheKeys::new(&config("projects/p/branches/b/endpoints/a", None));
        let b = CacheKeys::new(&config("projects/p/branches/b/endpoints/b", None));
        let c = CacheKeys::new(&config(
            "projects/p/branches/b/endpoints/a",
            Some("someone"),
        ));
        assert_ne!(a.credential, b.credential);
        assert_ne!(a.credential, c.credential);
        assert_eq!(
            a.workspace_token, b.workspace_token,
            "one workspace token per principal"
        );
        assert_eq!(
            a,
            CacheKeys::new(&config("projects/p/branches/b/endpoints/a", None))
        );
    }
}
