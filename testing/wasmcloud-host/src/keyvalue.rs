//! `wasi:keyvalue/store@0.2.0-draft` on the two shared backends of wasmCloud 2.7's host:
//!
//! - **NATS JetStream**: `open(identifier)` creates the key-value bucket `identifier` with the
//!   default configuration, which opens it when it exists (one JetStream request per `open`, as
//!   wasmCloud does it); `get`, `set` and `delete` are async-nats' own, so its key rule applies
//!   (only `[-/_=.a-zA-Z0-9]`, not starting or ending with `.`): a key with `:` fails.
//! - **Redis**: one database; `open(identifier)` names a prefix, the value of `key` is the Redis
//!   key `identifier:key`. Two hosts on one server share everything.
//!
//! Errors are `other(text)`, with the backend's message.

use anyhow::{Context, Result, bail};
use async_nats::jetstream;

/// A key-value backend, shared by every instance of the host.
#[derive(Clone)]
pub enum KeyValue {
    /// A NATS server with JetStream (`nats://host:port`).
    Nats(jetstream::Context),
    /// A Redis server (`redis://host:port`), one multiplexed connection for all instances.
    Redis(redis::aio::MultiplexedConnection),
}

impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyValue::Nats(_) => "KeyValue::Nats",
            KeyValue::Redis(_) => "KeyValue::Redis",
        })
    }
}

/// An open bucket (the guest's `bucket` resource).
pub enum Bucket {
    /// A JetStream key-value bucket (boxed: the handle is large).
    Nats(Box<jetstream::kv::Store>),
    /// Keys `<prefix>:<key>` in Redis.
    Redis {
        /// The connection shared by the host.
        conn: redis::aio::MultiplexedConnection,
        /// The identifier the bucket was opened with.
        prefix: String,
    },
}

impl KeyValue {
    /// Connects to `url`: `nats://…` (JetStream) or `redis://…`.
    pub async fn connect(url: &str) -> Result<KeyValue> {
        if url.starts_with("nats://") {
            let client = async_nats::connect(url)
                .await
                .with_context(|| format!("connecting to NATS at {url}"))?;
            Ok(KeyValue::Nats(jetstream::new(client)))
        } else if url.starts_with("redis://") {
            let client =
                redis::Client::open(url).with_context(|| format!("the Redis URL `{url}`"))?;
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to Redis at {url}"))?;
            Ok(KeyValue::Redis(conn))
        } else {
            bail!("key-value URL `{url}`: expected nats://host:port or redis://host:port")
        }
    }

    /// `open(identifier)`.
    pub async fn open(&self, identifier: &str) -> Result<Bucket, String> {
        match self {
            KeyValue::Nats(js) => js
                .create_key_value(jetstream::kv::Config {
                    bucket: identifier.to_owned(),
                    ..Default::default()
                })
                .await
                .map(|store| Bucket::Nats(Box::new(store)))
                .map_err(|e| format!("opening JetStream key-value bucket `{identifier}`: {e}")),
            KeyValue::Redis(conn) => Ok(Bucket::Redis {
                conn: conn.clone(),
                prefix: identifier.to_owned(),
            }),
        }
    }
}

impl Bucket {
    /// The value of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Bucket::Nats(kv) => kv
                .get(key)
                .await
                .map(|v| v.map(|b| b.to_vec()))
                .map_err(|e| format!("JetStream get: {e}")),
            Bucket::Redis { conn, prefix } => {
                redis::AsyncCommands::get(&mut conn.clone(), format!("{prefix}:{key}"))
                    .await
                    .map_err(|e| format!("Redis get: {e}"))
            }
        }
    }

    /// Sets `key` to `value`.
    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        match self {
            Bucket::Nats(kv) => kv
                .put(key, value.into())
                .await
                .map(|_| ())
                .map_err(|e| format!("JetStream put: {e}")),
            Bucket::Redis { conn, prefix } => redis::AsyncCommands::set::<_, _, ()>(
                &mut conn.clone(),
                format!("{prefix}:{key}"),
                value,
            )
            .await
            .map_err(|e| format!("Redis set: {e}")),
        }
    }

    /// Deletes `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        match self {
            Bucket::Nats(kv) => kv
                .delete(key)
                .await
                .map_err(|e| format!("JetStream delete: {e}")),
            Bucket::Redis { conn, prefix } => {
                redis::AsyncCommands::del::<_, ()>(&mut conn.clone(), format!("{prefix}:{key}"))
                    .await
                    .map_err(|e| format!("Redis delete: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "lakebase.v3.cred.0123456789abcdef";

    #[tokio::test]
    async fn nats_buckets_are_shared_by_clients_and_keys_follow_the_async_nats_rule() {
        let Some(bin) = lakebase_testkit::NatsServer::bin_from_env() else {
            eprintln!("wasmCloud-like NATS tier NOT run: no nats-server");
            return;
        };
        let nats = lakebase_testkit::NatsServer::start(&bin).unwrap();
        let (a, b) = (
            KeyValue::connect(&nats.url()).await.unwrap(),
            KeyValue::connect(&nats.url()).await.unwrap(),
        );
        let bucket = a.open("default").await.unwrap();
        assert_eq!(bucket.get(KEY).await.unwrap(), None);
        bucket.set(KEY, b"sealed".to_vec()).await.unwrap();
        // Another client (another host) opens the same bucket and sees the value.
        let other = b.open("default").await.unwrap();
        assert_eq!(other.get(KEY).await.unwrap(), Some(b"sealed".to_vec()));
        // Another bucket does not.
        assert_eq!(b.open("other").await.unwrap().get(KEY).await.unwrap(), None);
        other.delete(KEY).await.unwrap();
        assert_eq!(bucket.get(KEY).await.unwrap(), None);

        // A key outside `[-/_=.a-zA-Z0-9]` fails every operation, with async-nats' message.
        for key in ["lakebase:cred", "a b", ".starts-with-a-dot", ""] {
            let set = bucket.set(key, b"v".to_vec()).await.unwrap_err();
            let get = bucket.get(key).await.unwrap_err();
            let delete = bucket.delete(key).await.unwrap_err();
            for e in [&set, &get, &delete] {
                assert!(e.starts_with("JetStream "), "{key:?}: {e}");
                assert!(e.contains("key cannot be empty"), "{key:?}: {e}");
            }
        }
        // Bucket names are JetStream's: `:` is refused at open.
        let e = a.open("no:such").await.err().expect("refused");
        assert!(e.contains("no:such"), "{e}");
    }

    #[tokio::test]
    async fn redis_keys_are_the_identifier_then_the_key() {
        let redis = lakebase_testkit::RedisServer::start().unwrap();
        let kv = KeyValue::connect(&redis.url()).await.unwrap();
        let bucket = kv.open("default").await.unwrap();
        bucket.set("lakebase:cred", b"v".to_vec()).await.unwrap();
        let mut raw = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::AsyncCommands::keys(&mut raw, "*").await.unwrap();
        assert_eq!(keys, ["default:lakebase:cred"]);
        assert_eq!(
            kv.open("other")
                .await
                .unwrap()
                .get("lakebase:cred")
                .await
                .unwrap(),
            None
        );
        bucket.delete("lakebase:cred").await.unwrap();
        assert_eq!(bucket.get("lakebase:cred").await.unwrap(), None);
    }
}
