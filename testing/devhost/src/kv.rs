//! Key-value stores: SQLite (Spin's default, a file under the state directory, shared by every
//! instance and by every devhost process using the same file) and Redis (shared across nodes).

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// A store backend.
#[derive(Clone)]
pub enum Backend {
    /// SQLite file.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    /// Redis server.
    Redis(Arc<redis::Client>),
}

impl Backend {
    /// Opens (creating) a SQLite store at `path`.
    pub fn sqlite(path: &Path) -> Result<Backend> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS spin_key_value (
                 store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (store, key));",
        )?;
        Ok(Backend::Sqlite(Arc::new(Mutex::new(conn))))
    }

    /// A Redis store at `url` (`redis://host:port`).
    pub fn redis(url: &str) -> Result<Backend> {
        Ok(Backend::Redis(Arc::new(
            redis::Client::open(url).with_context(|| format!("redis url `{url}`"))?,
        )))
    }

    /// Value of `key` in `store`.
    pub async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Backend::Sqlite(c) => {
                let c = c.clone();
                let (store, key) = (store.to_owned(), key.to_owned());
                tokio::task::spawn_blocking(move || {
                    let c = c.lock().unwrap();
                    let mut stmt = c.prepare_cached(
                        "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    )?;
                    let mut rows = stmt.query(rusqlite::params![store, key])?;
                    Ok(match rows.next()? {
                        Some(row) => Some(row.get(0)?),
                        None => None,
                    })
                })
                .await?
            }
            Backend::Redis(client) => {
                let mut conn = client.get_multiplexed_async_connection().await?;
                Ok(redis::AsyncCommands::get(&mut conn, key).await?)
            }
        }
    }

    /// Sets `key`.
    pub async fn set(&self, store: &str, key: &str, value: Vec<u8>) -> Result<()> {
        match self {
            Backend::Sqlite(c) => {
                let c = c.clone();
                let (store, key) = (store.to_owned(), key.to_owned());
                tokio::task::spawn_blocking(move || {
                    c.lock().unwrap().execute(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                        rusqlite::params![store, key, value],
                    )?;
                    Ok(())
                })
                .await?
            }
            Backend::Redis(client) => {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::AsyncCommands::set::<_, _, ()>(&mut conn, key, value).await?;
                Ok(())
            }
        }
    }

    /// Deletes `key`.
    pub async fn delete(&self, store: &str, key: &str) -> Result<()> {
        match self {
            Backend::Sqlite(c) => {
                let c = c.clone();
                let (store, key) = (store.to_owned(), key.to_owned());
                tokio::task::spawn_blocking(move || {
                    c.lock().unwrap().execute(
                        "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                        rusqlite::params![store, key],
                    )?;
                    Ok(())
                })
                .await?
            }
            Backend::Redis(client) => {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::AsyncCommands::del::<_, ()>(&mut conn, key).await?;
                Ok(())
            }
        }
    }

    /// All keys of `store`.
    pub async fn keys(&self, store: &str) -> Result<Vec<String>> {
        match self {
            Backend::Sqlite(c) => {
                let c = c.clone();
                let store = store.to_owned();
                tokio::task::spawn_blocking(move || {
                    let c = c.lock().unwrap();
                    let mut stmt =
                        c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
                    let keys = stmt
                        .query_map([store], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?;
                    Ok(keys)
                })
                .await?
            }
            Backend::Redis(client) => {
                let mut conn = client.get_multiplexed_async_connection().await?;
                Ok(redis::AsyncCommands::keys(&mut conn, "*").await?)
            }
        }
    }
}
