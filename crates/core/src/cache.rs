//! Key-value records: the shared credential, the workspace token, and a best-effort mint lease.
//!
//! Keys are `lakebase.v3.<what>.<32 hex digits>`: short (well under SQLite's 256 bytes), free of
//! `/ \ ? #` (Azure Cosmos) and made only of `[-/_=.a-zA-Z0-9]` (the NATS key-value store behind
//! wasmCloud's `wasi:keyvalue` refuses anything else), whatever the endpoint name. The hash covers
//! everything that makes a credential different (workspace, identity, endpoint, user, host,
//! database) and the workspace secret in use (hashed), so two apps or endpoints that share a store
//! never read each other's tokens, and two deployments of one principal with different secrets
//! (during a secret rotation) never overwrite each other's records.
//!
//! Every value is sealed (`seal.rs`): only apps holding the same workspace secret can read or
//! write it. A value that does not open (forged, altered, of another version) or does not parse
//! is a miss, logged once per instance. A store that fails is bypassed (the caller then mints, as
//! if the cache were empty) and reported once per run of failures, not once per operation: as a
//! configuration problem when it has never answered this instance, as an outage when it has.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, Target, WorkspaceAuth};
use crate::host::{HostError, HostFailure, Kv};
use crate::log;
use crate::seal::Sealer;

/// The keys of one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CacheKeys {
    pub credential: String,
    pub lease: String,
    pub rejection: String,
    pub workspace_token: String,
}

impl CacheKeys {
    pub fn new(config: &Config) -> Self {
        let target = match &config.target {
            Target::Endpoint(e) => format!("endpoint:{e}"),
            Target::Instance(i) => format!("instance:{i}"),
        };
        let ws_scope = [workspace_scope(config), secret_digest(config)].join("\n");
        let scope = [
            ws_scope.as_str(),
            &target,
            config.pguser.as_deref().unwrap_or(""),
            config.pghost.as_deref().unwrap_or(""),
            &config.pgport.to_string(),
            &config.pgdatabase,
        ]
        .join("\n");
        CacheKeys {
            credential: format!("lakebase.v3.cred.{}", short_hash(&scope)),
            lease: format!("lakebase.v3.lease.{}", short_hash(&scope)),
            rejection: format!("lakebase.v3.rejected.{}", short_hash(&scope)),
            workspace_token: format!("lakebase.v3.ws.{}", short_hash(&ws_scope)),
        }
    }
}

/// Workspace and principal: who may share these records.
fn workspace_scope(config: &Config) -> String {
    let identity = match &config.auth {
        WorkspaceAuth::OAuthM2M { client_id, .. } => format!("sp:{client_id}"),
        // The PAT itself never enters a key: only its fingerprint does, inside a hash.
        WorkspaceAuth::Pat(token) => format!("pat:{}", token.fingerprint()),
    };
    [config.workspace.as_str(), &identity].join("\n")
}

/// SHA-256 of the workspace secret in use (client secret or PAT), hex: it enters keys only
/// inside another hash.
fn secret_digest(config: &Config) -> String {
    let secret = match &config.auth {
        WorkspaceAuth::OAuthM2M { client_secret, .. } => client_secret,
        WorkspaceAuth::Pat(token) => token,
    };
    Sha256::digest(secret.expose().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The records of one configuration in a key-value store.
#[derive(Debug)]
pub(crate) struct Cache {
    pub keys: CacheKeys,
    sealer: Sealer,
    /// Whether an unreadable record was reported already (once per instance, not per request).
    warned: AtomicBool,
    store: StoreHealth,
}

/// How the key-value store has answered this instance.
#[derive(Debug, Default)]
struct StoreHealth {
    /// An operation has succeeded.
    answered: AtomicBool,
    /// Failed operations since the last success (0: the store is answering).
    failing: AtomicU32,
}

impl Cache {
    pub fn new(config: &Config) -> Cache {
        let secret = match &config.auth {
            WorkspaceAuth::OAuthM2M { client_secret, .. } => client_secret,
            WorkspaceAuth::Pat(token) => token,
        };
        Cache {
            keys: CacheKeys::new(config),
            sealer: Sealer::new(secret, &workspace_scope(config)),
            warned: AtomicBool::new(false),
            store: StoreHealth::default(),
        }
    }

    /// Notes a failed store operation; the first of a run of failures is logged. A store the
    /// host refuses (not allowed, unknown), or that never answered otherwise, is misconfigured
    /// (a label the component may not open, a backend that refuses our keys): that is an error
    /// to fix, since meanwhile every request mints. One that answered before, or that does not
    /// answer in time, is down: a warning.
    fn store_failed(&self, operation: &str, what: &str, error: &HostError) {
        if self.store.failing.fetch_add(1, Ordering::Relaxed) > 0 {
            return;
        }
        let text = log::cap(&error.message);
        let refused = matches!(
            error.failure,
            HostFailure::NotAllowed | HostFailure::NotFound
        );
        if !refused
            && (self.store.answered.load(Ordering::Relaxed)
                || error.failure == HostFailure::Timeout)
        {
            log::warn(&format!(
                "the key-value store is not answering ({operation} of the {what} record: {text}); the cache is bypassed until it answers again, so requests may mint"
            ));
        } else {
            log::error(&format!(
                "the key-value store refused to {operation} the {what} record: {text}. \
                 Without the store nothing is cached: every request mints a database credential \
                 (a call to the workspace API) and logs in anew. Check the store's configuration: \
                 that this component may open it, and that its backend accepts keys such as `{}` \
                 (further failures are not logged until it answers)",
                self.keys.credential
            ));
        }
    }

    /// Notes an answer from the store (after failures: logged once).
    fn store_answered(&self) {
        self.store.answered.store(true, Ordering::Relaxed);
        let failed = self.store.failing.swap(0, Ordering::Relaxed);
        if failed > 0 {
            log::info(&format!(
                "the key-value store answers again, after {failed} failed operation(s)"
            ));
        }
    }

    /// Logs `message` the first time only.
    pub fn warn_once(&self, message: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn(&format!(
                "{message} (further unreadable or unfitting records are ignored silently)"
            ));
        }
    }

    /// Reads a sealed JSON record; `None` on absence, a value that does not open or parse, or a
    /// store failure (logged).
    pub async fn read<T: for<'de> Deserialize<'de>>(
        &self,
        kv: &impl Kv,
        key: &str,
        what: &str,
    ) -> Option<T> {
        let answer = kv.get(key).await;
        match &answer {
            Ok(_) => self.store_answered(),
            Err(e) => self.store_failed("read", what, e),
        }
        match answer {
            Ok(Some(bytes)) => {
                let parsed = self
                    .sealer
                    .open(key, &bytes)
                    .and_then(|plain| serde_json::from_slice(&plain).ok());
                if parsed.is_none() {
                    self.warn_once(&format!(
                        "ignoring a {what} record in the key-value store that was not sealed with this app's workspace secret, or is of another version"
                    ));
                }
                parsed
            }
            Ok(None) | Err(_) => None,
        }
    }

    pub async fn write(&self, kv: &impl Kv, key: &str, value: &impl Serialize, what: &str) {
        let Some(sealed) = serde_json::to_vec(value)
            .ok()
            .and_then(|plain| self.sealer.seal(key, &plain))
        else {
            log::warn(&format!("could not seal the {what} record; not caching it"));
            return;
        };
        match kv.set(key, &sealed).await {
            Ok(()) => self.store_answered(),
            Err(e) => self.store_failed("write", what, &e),
        }
    }

    pub async fn delete(&self, kv: &impl Kv, key: &str, what: &str) {
        match kv.delete(key).await {
            Ok(()) => self.store_answered(),
            Err(e) => self.store_failed("delete", what, &e),
        }
    }

    pub async fn read_lease(&self, kv: &impl Kv) -> Option<Lease> {
        self.read(kv, &self.keys.lease, "mint lease").await
    }

    pub async fn write_lease(&self, kv: &impl Kv, lease: &Lease) {
        self.write(kv, &self.keys.lease, lease, "mint lease").await
    }
}

/// The version of every record (inside the sealed JSON, and in the key prefix).
pub(crate) const RECORD_VERSION: u32 = 2;

/// "Instance `holder` is minting until `until`": lets other instances wait for its record
/// instead of minting too. Best effort only: the store has no compare-and-swap, so two instances
/// may both mint, which is harmless (Lakebase tokens coexist).
///
/// It is also where the instances of a host that runs every request in a fresh instance (Spin's
/// WASIp2, wasmCloud, `wasmtime serve`) keep what must outlive one request, read only off the
/// happy path (when the stored credential is missing or past its reuse limit):
/// - `backoff_ms`: the wait after the last failed refresh, so that the back-off doubles across
///   instances (kept when the lease is claimed again, gone with the lease after a success);
/// - `rejected`: the database rejected a freshly minted token (the role is wrong): until
///   `until_ms` every instance answers that error without a login or a mint; after it, the one
///   instance that claims the lease tries once while the others still answer the error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub holder: String,
    /// Unix milliseconds.
    pub until_ms: i64,
    /// The back-off of a failing refresh, in milliseconds (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_ms: u64,
    /// A remembered rejection (see [`crate::rejection`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<crate::rejection::RejectionRecord>,
}

impl Lease {
    /// The rejection this lease carries, if any (a record of another version is none).
    pub fn rejection(&self) -> Option<crate::rejection::Rejection> {
        use crate::tier::Cached as _;
        self.rejected
            .clone()
            .and_then(crate::rejection::Rejection::from_record)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigBuilder;

    fn config(endpoint: &str, user: Option<&str>) -> Config {
        ConfigBuilder {
            host: Some("adb-1.cloud.databricks.com".into()),
            client_id: Some("c1".into()),
            client_secret: Some("s1".into()),
            endpoint: Some(endpoint.into()),
            pguser: user.map(str::to_owned),
            ..ConfigBuilder::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn keys_are_short_and_safe_for_every_backend() {
        let long = format!(
            "projects/{}/branches/{}/endpoints/{}",
            "p".repeat(63),
            "b".repeat(63),
            "e".repeat(63)
        );
        let k = CacheKeys::new(&config(&long, None));
        for key in [&k.credential, &k.lease, &k.rejection, &k.workspace_token] {
            assert!(key.len() <= 64, "{key}");
            assert!(!key.contains(['/', '\\', '?', '#']), "{key}");
            // NATS key-value (wasmCloud): `[-/_=.a-zA-Z0-9]`, not starting or ending with `.`.
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)),
                "{key}"
            );
            assert!(!key.starts_with('.') && !key.ends_with('.'), "{key}");
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

    #[test]
    fn keys_differ_by_secret_so_a_rotation_does_not_collide() {
        let a = config("projects/p/branches/b/endpoints/a", None);
        let mut b = ConfigBuilder {
            host: Some("adb-1.cloud.databricks.com".into()),
            client_id: Some("c1".into()),
            client_secret: Some("s2".into()),
            endpoint: Some("projects/p/branches/b/endpoints/a".into()),
            ..ConfigBuilder::default()
        };
        let (ka, kb) = (CacheKeys::new(&a), CacheKeys::new(&b.clone_validate()));
        assert_ne!(ka.credential, kb.credential);
        assert_ne!(ka.lease, kb.lease);
        assert_ne!(ka.workspace_token, kb.workspace_token);
        b.client_secret = Some("s1".into());
        assert_eq!(
            ka,
            CacheKeys::new(&b.clone_validate()),
            "same secret, same keys"
        );
        for key in [&ka.credential, &ka.workspace_token] {
            assert!(!key.contains("s1"), "{key}");
        }
    }

    /// A store that refuses every operation while `refusing` is set.
    struct Store {
        refusing: std::cell::Cell<bool>,
    }

    impl Kv for Store {
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, HostError> {
            self.answer(None)
        }
        async fn set(&self, _: &str, _: &[u8]) -> Result<(), HostError> {
            self.answer(())
        }
        async fn delete(&self, _: &str) -> Result<(), HostError> {
            self.answer(())
        }
    }

    impl Store {
        fn answer<T>(&self, value: T) -> Result<T, HostError> {
            if self.refusing.get() {
                Err("key cannot be empty or start/end with `.`"
                    .to_owned()
                    .into())
            } else {
                Ok(value)
            }
        }
    }

    #[test]
    fn a_refusing_store_is_reported_once_as_configuration_then_as_outage() {
        let cache = Cache::new(&config("projects/p/branches/b/endpoints/a", None));
        let store = Store {
            refusing: true.into(),
        };
        let key = cache.keys.credential.clone();
        let ops = |n| {
            for _ in 0..n {
                futures::executor::block_on(async {
                    assert_eq!(cache.read::<Lease>(&store, &key, "credential").await, None);
                    cache.write(&store, &key, &1, "credential").await;
                    cache.delete(&store, &key, "credential").await;
                });
            }
        };
        log::take_lines();
        ops(5);
        let lines = log::take_lines();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with("lakebase: error: the key-value store refused to read")
                && lines[0].contains("every request mints")
                && lines[0].contains("key cannot be empty")
                && lines[0].contains(&key),
            "{}",
            lines[0]
        );

        store.refusing.set(false);
        ops(2);
        assert_eq!(
            log::take_lines(),
            ["lakebase: the key-value store answers again, after 15 failed operation(s)"]
        );

        store.refusing.set(true);
        ops(3);
        let lines = log::take_lines();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with("lakebase: warning: the key-value store is not answering"),
            "{}",
            lines[0]
        );
    }

    impl ConfigBuilder {
        fn clone_validate(&self) -> Config {
            ConfigBuilder {
                host: self.host.clone(),
                client_id: self.client_id.clone(),
                client_secret: self.client_secret.clone(),
                endpoint: self.endpoint.clone(),
                ..ConfigBuilder::default()
            }
            .validate()
            .unwrap()
        }
    }
}
