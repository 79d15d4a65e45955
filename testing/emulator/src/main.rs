//! `lakebase-emulator`: a local Databricks workspace in front of a real PostgreSQL.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use lakebase_emulator::{Backend, Emulator, EmulatorOptions};

const HELP: &str = "lakebase-emulator: a local Databricks workspace (OIDC, PAT, Lakebase credential APIs)
with a token-checking login proxy in front of a real PostgreSQL.

USAGE: lakebase-emulator --pg-backend HOST:PORT --pg-admin-password PW [OPTIONS]

OPTIONS:
  --listen ADDR              HTTP address (default 127.0.0.1:8787)
  --pg-listen ADDR           login proxy address (default 127.0.0.1:0)
  --pg-backend HOST:PORT     the real PostgreSQL (required)
  --pg-admin-user NAME       its superuser (default postgres)
  --pg-admin-password PW     its superuser's password (or env LAKEBASE_EMULATOR_PG_ADMIN_PASSWORD)
  --client ID:SECRET         a service principal (repeatable; default: a built-in one)
  --pat TOKEN:USER           a personal access token (repeatable; default: a built-in one)
  --endpoint NAME            an Autoscaling endpoint projects/<p>/branches/<b>/endpoints/<e> (repeatable)
  --instance NAME            a Provisioned instance (repeatable)
  --db-token-ttl SECS        database token lifetime (default 3600)
  --tls                      offer TLS on the login proxy; writes the CA's PEM to --ca-out
  --startup-options MODE     what the login proxy does with a client's `options`: forward
                             (default), drop (silently), refuse (FATAL 08P01, as PgBouncer)
  --ca-out FILE              where to write the CA's PEM (default: lakebase-emulator-ca.pem)
  --quiet                    do not echo the log to stderr
  -h, --help                 this help

Prints one JSON line on stdout: {\"http_url\", \"pg_host\", \"pg_port\", ...}. Stop with Ctrl-C.";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8787".to_owned();
    let mut pg_listen = "127.0.0.1:0".to_owned();
    let mut backend: Option<String> = None;
    let mut admin_user = "postgres".to_owned();
    let mut admin_password = std::env::var("LAKEBASE_EMULATOR_PG_ADMIN_PASSWORD").ok();
    let (mut clients, mut pats, mut endpoints, mut instances) = (vec![], vec![], vec![], vec![]);
    let mut ttl = 3600u64;
    let mut quiet = false;
    let mut tls = false;
    let mut startup_options = lakebase_emulator::StartupOptions::Forward;
    let mut ca_out = "lakebase-emulator-ca.pem".to_owned();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            "--listen" => listen = value()?,
            "--pg-listen" => pg_listen = value()?,
            "--pg-backend" => backend = Some(value()?),
            "--pg-admin-user" => admin_user = value()?,
            "--pg-admin-password" => admin_password = Some(value()?),
            "--client" => clients.push(split(&value()?, "--client ID:SECRET")?),
            "--pat" => pats.push(split(&value()?, "--pat TOKEN:USER")?),
            "--endpoint" => endpoints.push(value()?),
            "--instance" => instances.push(value()?),
            "--db-token-ttl" => ttl = value()?.parse().context("--db-token-ttl takes seconds")?,
            "--quiet" => quiet = true,
            "--tls" => tls = true,
            "--startup-options" => {
                let v = value()?;
                startup_options =
                    lakebase_emulator::StartupOptions::parse(&v).with_context(|| {
                        format!("--startup-options takes forward, drop or refuse, not {v:?}")
                    })?;
            }
            "--ca-out" => ca_out = value()?,
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    let backend = backend.context("--pg-backend HOST:PORT is required (see --help)")?;
    let (host, port) = backend
        .rsplit_once(':')
        .context("--pg-backend must be HOST:PORT")?;
    let mut opts = EmulatorOptions::new(Backend {
        host: host.to_owned(),
        port: port.parse().context("--pg-backend port")?,
        admin_user,
        admin_password: admin_password.context("--pg-admin-password is required")?,
    });
    opts.listen = listen.parse().context("--listen")?;
    opts.pg_listen = pg_listen.parse().context("--pg-listen")?;
    if !clients.is_empty() {
        opts.service_principals = clients;
    }
    if !pats.is_empty() {
        opts.pats = pats;
    }
    if !endpoints.is_empty() {
        opts.endpoints = endpoints;
    }
    if !instances.is_empty() {
        opts.instances = instances;
    }
    opts.db_token_ttl = Duration::from_secs(ttl);
    opts.echo_log = !quiet;
    opts.tls = tls;
    opts.startup_options = startup_options;
    let emulator = Emulator::start(opts.clone()).await?;
    if let Some(pem) = emulator.ca_pem() {
        std::fs::write(&ca_out, pem).with_context(|| format!("writing {ca_out}"))?;
    }
    println!(
        "{}",
        serde_json::json!({
            "http_url": emulator.http_url(),
            "pg_host": emulator.pg_addr().ip().to_string(),
            "pg_port": emulator.pg_addr().port(),
            "endpoints": opts.endpoints,
            "instances": opts.instances,
            "client_ids": opts.service_principals.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            "ca_path": if tls { Some(ca_out.clone()) } else { None },
        })
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn split(s: &str, what: &str) -> Result<(String, String)> {
    s.split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .with_context(|| format!("expected {what}"))
}
