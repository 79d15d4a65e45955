//! Two devhost processes (two "nodes") sharing one Redis key-value store: one mint serves both.
//! Also scans every response and every log (devhosts, guests, emulator) for secrets.

mod e2e;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;
use lakebase_emulator::{DEFAULT_CLIENT_SECRET, DEFAULT_PAT};
use lakebase_testkit::RedisServer;

struct Node {
    child: Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Node {
    fn start(
        vars: &std::collections::HashMap<String, String>,
        runtime_config: &std::path::Path,
        state: &std::path::Path,
    ) -> Node {
        let mut cmd = Command::new(devhost_bin());
        cmd.arg("up")
            .arg("--from")
            .arg(repo_root().join("spin.toml"))
            .args(["--listen", "127.0.0.1:0", "--runtime-config-file"])
            .arg(runtime_config)
            .arg("--state-dir")
            .arg(state)
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Secrets through the environment, the rest on the command line (both paths exercised).
        for (k, v) in vars {
            if k.contains("secret") {
                cmd.env(format!("SPIN_VARIABLE_{}", k.to_uppercase()), v);
            } else {
                cmd.arg("--variable").arg(format!("{k}={v}"));
            }
        }
        let mut child = cmd.spawn().expect("starting devhost");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                panic!("devhost did not start: {}", log.lock().unwrap());
            }
            if let Some(u) = line.trim().strip_prefix("Serving ") {
                break u.to_owned();
            }
        };
        std::thread::spawn(move || for _ in stdout.lines() {});
        Node { child, url, log }
    }

    /// A request on a fresh connection (`Connection: close`).
    fn get(&self, path: &str) -> (u16, String) {
        use std::io::Write;
        let addr = self.url.strip_prefix("http://").unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_mint_through_redis_and_nothing_leaks() {
    let s = Stack::start().await;
    let redis = RedisServer::start().expect("starting redis");
    let dir = temp_dir("nodes");
    let rc = dir.join("runtime-config.toml");
    std::fs::write(
        &rc,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let (a, b) = {
        let vars = s.vars.clone();
        let (rc1, rc2) = (rc.clone(), rc.clone());
        let (d1, d2) = (dir.join("a"), dir.join("b"));
        let v2 = vars.clone();
        tokio::task::spawn_blocking(move || {
            (Node::start(&vars, &rc1, &d1), Node::start(&v2, &rc2, &d2))
        })
        .await
        .unwrap()
    };
    let mut responses = String::new();
    let (status, body) = tokio::task::block_in_place(|| a.get("/health"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"minted\""), "{body}");
    responses.push_str(&body);
    for node in [&b, &a, &b] {
        let (status, body) = tokio::task::block_in_place(|| node.get("/health"));
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("\"kv\"") || body.contains("\"memory\""),
            "{body}"
        );
        responses.push_str(&body);
    }
    assert_eq!(s.mints(), 1, "one mint served both nodes");
    println!("two nodes over one Redis store: {} mint(s)", s.mints());

    // Some error paths too, so their messages are scanned as well.
    s.emu.revoke_all();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = tokio::task::block_in_place(|| b.get("/health"));
    assert_eq!(status, 200, "{body}");
    responses.push_str(&body);
    responses.push_str(&tokio::task::block_in_place(|| a.get("/notes/abc")).1);

    let mut logs = String::new();
    for node in [&a, &b] {
        logs.push_str(&node.log.lock().unwrap());
    }
    logs.push_str(&s.emu.log_lines().join("\n"));
    assert!(
        logs.contains("minted database credential"),
        "the logs were captured: {logs}"
    );
    let tokens = redis_values(&redis.url());
    assert!(!tokens.is_empty(), "the shared store holds the credential");
    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain([DEFAULT_CLIENT_SECRET, DEFAULT_PAT])
    {
        assert!(!responses.contains(secret), "secret in a response");
        assert!(!logs.contains(secret), "secret in a log:\n{logs}");
    }
    assert!(
        !logs.contains("postgres://") || !logs.contains("@127.0.0.1"),
        "connection string in a log"
    );
}

/// Every token-like value in the Redis store (the cached credentials and workspace tokens).
fn redis_values(url: &str) -> Vec<String> {
    let port = url.rsplit(':').next().unwrap();
    let keys = Command::new("redis-cli")
        .args(["-p", port, "--raw", "keys", "lakebase:*"])
        .output()
        .unwrap();
    let mut out = Vec::new();
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        let v = Command::new("redis-cli")
            .args(["-p", port, "--raw", "get", key])
            .output()
            .unwrap();
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&v.stdout)
            && let Some(t) = json.get("token").and_then(|t| t.as_str())
        {
            out.push(t.to_owned());
        }
    }
    out
}
