//! A WASIp2 component (spin-sdk 5.2, `tests/p2-probe`) on the devhost, as Spin 3.4 - 4.1 run
//! one: a fresh instance per request, `fermyon:spin` key-value and variables @2.0.0 and
//! `spin:postgres@4.0.0` on the same backends as the WASIp3 interfaces, against a real
//! PostgreSQL. Each test starts its own cluster and host.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use lakebase_devhost::{Devhost, DevhostOptions, HttpFlavour, InstanceReuse};
use lakebase_e2e::*;
use lakebase_testkit::PgCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn manifest() -> std::path::PathBuf {
    repo_root().join("tests/p2-probe/spin.toml")
}

fn load(state_dir: &Path, pg: &PgCluster) -> Devhost {
    load_with(
        state_dir,
        &[
            ("pghost", pg.host().to_owned()),
            ("pgport", pg.port().to_string()),
        ],
    )
}

fn load_with(state_dir: &Path, vars: &[(&str, String)]) -> Devhost {
    p2_probe_wasm();
    let vars = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Devhost::load(DevhostOptions {
        manifest: manifest(),
        state_dir: Some(state_dir.to_owned()),
        variables: vars,
        env: Some(HashMap::new()),
        // Spin's WASIp3 defaults: a WASIp2 component must still get one instance per request.
        reuse: InstanceReuse::SPIN,
        ..Default::default()
    })
    .expect("loading the p2 probe")
}

async fn send(host: &Devhost, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::from(body.to_owned()))
        .unwrap();
    let response = host.handle(request).await.expect("a response");
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lakebase-p2-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_probe_imports_spins_wasip2_interfaces() {
    let (imports, exports) = lakebase_devhost::component_world(&p2_probe_wasm()).unwrap();
    println!("imports: {imports:#?}\nexports: {exports:#?}");
    for name in [
        "fermyon:spin/key-value@2.0.0",
        "fermyon:spin/variables@2.0.0",
        "spin:postgres/postgres@4.0.0",
        "spin:postgres/postgres@3.0.0",
    ] {
        assert!(imports.iter().any(|i| i == name), "{name} in {imports:?}");
    }
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2.")),
        "{exports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasip2_component_runs_unchanged_with_a_fresh_instance_per_request() {
    let pg = PgCluster::start().expect("a PostgreSQL cluster");
    let dir = state_dir("serve");
    let host = load(&dir, &pg);
    assert_eq!(host.flavour(), HttpFlavour::WasiP2);

    // Key-value: written by one request (instance), read by the next.
    assert_eq!(
        send(&host, "PUT", "/kv/greeting", "written by request 1").await,
        (200, "set".to_owned())
    );
    assert_eq!(
        send(&host, "GET", "/kv/greeting", "").await,
        (200, "written by request 1".to_owned())
    );
    assert_eq!(send(&host, "GET", "/kv/absent", "").await.0, 404);
    assert_eq!(host.instances_created(), 3, "one instance per request");

    // A variable, and an undefined one as the SDK reports it.
    assert_eq!(
        send(&host, "GET", "/var/probe_message", "").await,
        (200, "hello from a variable".to_owned())
    );
    let (status, body) = send(&host, "GET", "/var/nope", "").await;
    assert_eq!(status, 500);
    assert!(body.contains("Undefined"), "{body}");

    // Postgres through spin:postgres@4.0.0, three requests (three instances) on one pool.
    let address = format!(
        "{} sslmode=disable application_name=p2probe",
        pg.admin_conninfo()
    );
    for _ in 0..3 {
        let (status, body) = send(&host, "POST", "/pg", &address).await;
        assert_eq!(status, 200, "{body}");
        let mut lines = body.lines();
        assert_eq!(
            lines.next().unwrap(),
            "greeting:DbDataType::Str,answer:DbDataType::Int32,who:DbDataType::Str,nothing:DbDataType::Int64"
        );
        assert_eq!(
            lines.next().unwrap(),
            "hello from postgres;42;postgres;None"
        );
    }
    // spin:postgres@3.0.0 (spin_sdk::pg3): Spin's smaller types, a uuid unsupported.
    let (status, body) = send(&host, "POST", "/pg3", &address).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "DbDataType::Str,DbDataType::Int32,DbDataType::Other,DbDataType::Int64\n\
         [[DbValue::Str(\"hello\"), DbValue::Int32(42), DbValue::Unsupported, DbValue::DbNull]]"
    );
    let sessions = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'p2probe'",
        )
        .unwrap();
    assert_eq!(sessions, "1", "the pool outlives the instances");

    // A host missing from allowed_outbound_hosts is refused before any connection, in Spin's words.
    let (status, body) = send(
        &host,
        "POST",
        "/pg",
        "postgres://u:secretpw@192.0.2.7:5432/db?sslmode=disable",
    )
    .await;
    assert_eq!(status, 500);
    assert!(
        body.contains("ConnectionFailed")
            && body.contains("address postgres://192.0.2.7:5432 is not permitted"),
        "{body}"
    );
    assert!(!body.contains("secretpw"), "{body}");

    // A bad password: the connect error carries the server's SQLSTATE and not the password.
    let bad = format!(
        "host=127.0.0.1 port={} user=postgres password=wrong-password-123 dbname=postgres sslmode=disable",
        pg.port()
    );
    let (status, body) = send(&host, "POST", "/pg", &bad).await;
    assert_eq!(status, 500);
    assert!(body.contains("28P01"), "{body}");
    assert!(!body.contains("wrong-password-123"), "{body}");
    assert_eq!(host.instances_created(), 11);

    // Another host on the same state directory (as a second process would be) sees the value.
    let other = load(&dir, &pg);
    assert_eq!(
        send(&other, "GET", "/kv/greeting", "").await,
        (200, "written by request 1".to_owned())
    );
    drop(other);
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasip2_component_is_served_over_http() {
    let pg = PgCluster::start().expect("a PostgreSQL cluster");
    let dir = state_dir("tcp");
    let host = load(&dir, &pg);
    let server = host
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serving");
    let addr = server.local_addr();
    let mut answers = Vec::new();
    for path in ["/var/probe_message", "/var/probe_message"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        answers.push(response);
    }
    for response in &answers {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("hello from a variable"), "{response}");
    }
    assert_eq!(host.instances_created(), 2);
    server.shutdown();
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_goes_only_to_allowed_hosts() {
    // A one-answer HTTP server on loopback, the component's allowed destination.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong")
            .await
            .unwrap();
        head
    });
    let dir = state_dir("http");
    let host = load_with(&dir, &[("echo_port", port.to_string())]);
    let (status, body) = send(
        &host,
        "POST",
        "/http",
        &format!("http://127.0.0.1:{port}/ping"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "200 pong"));
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /ping HTTP/1.1"), "{head}");
    let (status, body) = send(&host, "POST", "/http", "http://127.0.0.1:9999/ping").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}
