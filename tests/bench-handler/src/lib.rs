//! Benchmark fixture (`tests/e2e/examples/plugin_bench.rs`, phase `static`): one handler, one
//! query, two ways to open the connection, so that the library's path is the only difference
//! between the two routes (same component, same instance, same answer):
//!
//! - `GET /static`: a fixed connection string opened as a handler with a static password
//!   would (`Connection::open`); the string is the one the library builds, taken once per
//!   instance, so that both routes draw on the same host pool and database sessions (two pools
//!   would compare two server sessions, whose latency differs by more than what is measured);
//! - `GET /library`: [`lakebase_spin::spin::connect`], the cached OAuth credential.
//!
//! Both run `SELECT 1::int4` and answer `1`; an error answers 500 with its text.

use std::sync::OnceLock;

use spin_sdk::http::Request;
use spin_sdk::pg::Connection;

static STATIC_ADDRESS: OnceLock<String> = OnceLock::new();

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<http::Response<String>> {
    let (status, body) = match run(req.uri().path()).await {
        Ok(one) => (200, one.to_string()),
        Err(e) => (500, e.to_string()),
    };
    Ok(http::Response::builder().status(status).body(body)?)
}

async fn run(path: &str) -> anyhow::Result<i32> {
    let conn = match path {
        "/static" => {
            let address = match STATIC_ADDRESS.get() {
                Some(a) => a,
                None => {
                    let lb = lakebase_spin::spin::lakebase().await?;
                    let credential = lb.credential().await?.credential;
                    let a = lb.connection_string(&credential).expose().to_owned();
                    STATIC_ADDRESS.get_or_init(|| a)
                }
            };
            Connection::open(address.as_str()).await?
        }
        "/library" => lakebase_spin::spin::connect().await?.connection,
        other => anyhow::bail!("no route {other}: GET /static or /library"),
    };
    let rows = conn
        .query("SELECT 1::int4 AS one", [])
        .await?
        .collect()
        .await?;
    rows.first()
        .and_then(|r| r.get::<i32>("one"))
        .ok_or_else(|| anyhow::anyhow!("no row"))
}
