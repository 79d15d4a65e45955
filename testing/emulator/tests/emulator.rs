//! The emulator against a real PostgreSQL: minted tokens log in through the proxy, many at once,
//! until their own expiry; workspace tokens and revoked tokens do not.

use std::time::Duration;

use lakebase_emulator::*;
use lakebase_testkit::PgCluster;
use serde_json::{Value, json};

async fn start(pg: &PgCluster) -> Emulator {
    let mut opts = EmulatorOptions::new(Backend {
        host: pg.host().into(),
        port: pg.port(),
        admin_user: pg.superuser().into(),
        admin_password: pg.superuser_password().into(),
    });
    opts.fraction_digits = 9;
    Emulator::start(opts).await.unwrap()
}

async fn workspace_token(emu: &Emulator) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/oidc/v1/token", emu.http_url()))
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=all-apis")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    v["access_token"].as_str().unwrap().to_owned()
}

async fn mint(emu: &Emulator, bearer: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/2.0/postgres/credentials", emu.http_url()))
        .bearer_auth(bearer)
        .json(&json!({"endpoint": DEFAULT_ENDPOINT}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn login(
    emu: &Emulator,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(emu.pg_addr().port())
        .user(user)
        .password(password)
        .dbname("databricks_postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test]
async fn minted_tokens_log_in_and_coexist() {
    let pg = PgCluster::start().unwrap();
    let emu = start(&pg).await;
    let ws = workspace_token(&emu).await;
    let (status, first) = mint(&emu, &ws).await;
    assert_eq!(status, 200, "{first}");
    let t1 = first["token"].as_str().unwrap().to_owned();
    assert!(t1.len() > 800, "JWT-sized token: {}", t1.len());
    let exp = first["expire_time"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.contains('.'), "{exp}");
    let (_, second) = mint(&emu, &ws).await;
    let t2 = second["token"].as_str().unwrap().to_owned();

    for t in [&t1, &t2] {
        let c = login(&emu, DEFAULT_CLIENT_ID, t)
            .await
            .expect("token logs in");
        let row = c.query_one("select current_user::text", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), DEFAULT_CLIENT_ID);
        c.batch_execute("create table if not exists t (x int)")
            .await
            .unwrap();
    }
    assert_eq!(emu.mints(), 2);

    // The workspace token is not a database password.
    let e = login(&emu, DEFAULT_CLIENT_ID, &ws).await.err().unwrap();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28P01");
    assert!(db.message().contains("not a valid JWT"), "{}", db.message());
    // Nor is a token of another role.
    let e = login(&emu, DEFAULT_PAT_USER, &t1).await.err().unwrap();
    assert_eq!(e.as_db_error().unwrap().code().code(), "28P01");

    for line in emu.log_lines() {
        assert!(
            !line.contains(&t1) && !line.contains(&ws) && !line.contains(DEFAULT_CLIENT_SECRET),
            "{line}"
        );
    }
}

#[tokio::test]
async fn expiry_is_checked_at_login_only_and_revocation_cuts_sessions() {
    let pg = PgCluster::start().unwrap();
    let emu = start(&pg).await;
    emu.set_db_token_ttl(Duration::from_secs(1));
    let ws = workspace_token(&emu).await;
    let (_, v) = mint(&emu, &ws).await;
    let t = v["token"].as_str().unwrap().to_owned();
    let open = login(&emu, DEFAULT_CLIENT_ID, &t).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    open.query_one("select 1", &[])
        .await
        .expect("an open session outlives its token");
    let e = login(&emu, DEFAULT_CLIENT_ID, &t).await.err().unwrap();
    assert_eq!(e.as_db_error().unwrap().code().code(), "28P01");

    emu.set_db_token_ttl(Duration::from_secs(3600));
    let (_, v) = mint(&emu, &ws).await;
    let t = v["token"].as_str().unwrap().to_owned();
    let open = login(&emu, DEFAULT_CLIENT_ID, &t).await.unwrap();
    emu.revoke_all();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        open.query_one("select 1", &[]).await.is_err(),
        "session cut"
    );
    let e = login(&emu, DEFAULT_CLIENT_ID, &t).await.err().unwrap();
    assert_eq!(e.as_db_error().unwrap().code().code(), "28P01");
}

#[tokio::test]
async fn errors_faults_and_counts() {
    let pg = PgCluster::start().unwrap();
    let emu = start(&pg).await;
    let http = reqwest::Client::new();
    // Bad client secret.
    let r = http
        .post(format!("{}/oidc/v1/token", emu.http_url()))
        .basic_auth(DEFAULT_CLIENT_ID, Some("wrong"))
        .body("grant_type=client_credentials&scope=all-apis")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    // Unknown endpoint; no token.
    let ws = workspace_token(&emu).await;
    let r = http
        .post(format!("{}/api/2.0/postgres/credentials", emu.http_url()))
        .bearer_auth(&ws)
        .json(&json!({"endpoint": "projects/x/branches/y/endpoints/z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "NOT_FOUND");
    let (status, body) = mint(&emu, "nope").await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    // A scripted 503 with Retry-After, then the normal answer.
    emu.fault(Fault {
        route: "POST /api/2.0/postgres/credentials".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 503,
            error_code: "TEMPORARILY_UNAVAILABLE".into(),
            message: "busy".into(),
            retry_after: Some(1),
        },
    });
    let r = http
        .post(format!("{}/api/2.0/postgres/credentials", emu.http_url()))
        .bearer_auth(&ws)
        .json(&json!({"endpoint": DEFAULT_ENDPOINT}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(mint(&emu, &ws).await.0, 200);
    // PAT + SCIM + Provisioned.
    let me: Value = http
        .get(format!("{}/api/2.0/preview/scim/v2/Me", emu.http_url()))
        .bearer_auth(DEFAULT_PAT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["userName"], DEFAULT_PAT_USER);
    let r: Value = http
        .post(format!("{}/api/2.0/database/credentials", emu.http_url()))
        .bearer_auth(DEFAULT_PAT)
        .json(&json!({"instance_names": [DEFAULT_INSTANCE], "request_id": "5d3c7f0e-2c8b-4f39-9d5c-3f1b2a4c5d6e"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r["expiration_time"].is_string() && r["token"].is_string(),
        "{r}"
    );
    let c = login(&emu, DEFAULT_PAT_USER, r["token"].as_str().unwrap())
        .await
        .unwrap();
    c.query_one("select 1", &[]).await.unwrap();
    let counts = emu.counts();
    assert_eq!(counts["POST /api/2.0/postgres/credentials"], 4);
    assert_eq!(counts["POST /oidc/v1/token"], 2);
}

/// Waits up to 5 s for the proxy's gauge to read `n` (sessions end on the proxy's own tasks).
async fn sessions_open_becomes(emu: &Emulator, n: u64) {
    for _ in 0..100 {
        if emu.sessions_open() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sessions open: {}, expected {n}", emu.sessions_open());
}

#[tokio::test]
async fn sessions_are_counted_and_startup_options_reach_the_server() {
    let pg = PgCluster::start().unwrap();
    let emu = start(&pg).await;
    let ws = workspace_token(&emu).await;
    let before = std::time::Instant::now();
    let (_, v) = mint(&emu, &ws).await;
    let t = v["token"].as_str().unwrap().to_owned();
    let times = emu.mint_times();
    assert_eq!(times.len(), 1);
    assert!(times[0] >= before && times[0] <= std::time::Instant::now());
    assert_eq!((emu.sessions_open(), emu.sessions_max()), (0, 0));

    let a = login(&emu, DEFAULT_CLIENT_ID, &t).await.unwrap();
    let b = login(&emu, DEFAULT_CLIENT_ID, &t).await.unwrap();
    assert_eq!((emu.sessions_open(), emu.sessions_max()), (2, 2));
    // A refused login is no session.
    assert!(login(&emu, DEFAULT_CLIENT_ID, &ws).await.is_err());
    assert_eq!(emu.sessions_open(), 2);
    drop(a);
    sessions_open_becomes(&emu, 1).await;
    assert_eq!(emu.sessions_max(), 2);
    emu.reset_sessions_max();
    assert_eq!(emu.sessions_max(), 1);
    b.query_one("select 1", &[]).await.unwrap();

    // The client's startup parameters reach PostgreSQL: a server-side idle timeout ends the
    // session, and the gauge follows.
    let (c, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(emu.pg_addr().port())
        .user(DEFAULT_CLIENT_ID)
        .password(&t)
        .dbname("databricks_postgres")
        .options("-c idle_session_timeout=1000")
        .application_name("sessions-test")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = c
        .query_one(
            "select current_setting('idle_session_timeout'), current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "1s");
    assert_eq!(row.get::<_, String>(1), "sessions-test");
    assert_eq!(emu.sessions_open(), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sessions_open_becomes(&emu, 1).await;
    assert!(c.is_closed(), "the server closed the idle session");
    drop(b);
    sessions_open_becomes(&emu, 0).await;
    assert_eq!(emu.sessions_max(), 2);
}

/// The proxy's three answers to `options`: forwarded (above), dropped silently, refused with
/// FATAL 08P01 naming the setting; set at run time (the control route does the same).
#[tokio::test]
async fn startup_options_are_forwarded_dropped_or_refused() {
    let pg = PgCluster::start().unwrap();
    let emu = start(&pg).await;
    let ws = workspace_token(&emu).await;
    let (_, v) = mint(&emu, &ws).await;
    let t = v["token"].as_str().unwrap().to_owned();
    let connect = || async {
        let (c, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(emu.pg_addr().port())
            .user(DEFAULT_CLIENT_ID)
            .password(&t)
            .dbname("databricks_postgres")
            .options("-c idle_session_timeout=7000")
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(conn);
        let row = c
            .query_one("select current_setting('idle_session_timeout')", &[])
            .await?;
        Ok::<String, tokio_postgres::Error>(row.get(0))
    };
    assert_eq!(connect().await.unwrap(), "7s", "forwarded by default");
    emu.set_startup_options(lakebase_emulator::StartupOptions::Drop);
    assert_eq!(
        connect().await.unwrap(),
        "0",
        "dropped: the server's default"
    );
    emu.set_startup_options(lakebase_emulator::StartupOptions::Refuse);
    let e = connect().await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "08P01");
    assert!(db.message().contains("idle_session_timeout"), "{db}");
    assert_eq!(emu.count(lakebase_emulator::LOGINS_REFUSED_OPTIONS), 1);
    // Without options the refusing proxy logs in.
    let c = login(&emu, DEFAULT_CLIENT_ID, &t).await.unwrap();
    c.query_one("select 1", &[]).await.unwrap();
}

/// A principal whose role is missing in the database is refused by PostgreSQL itself (the
/// token is valid), counted as a rejected login; once the role exists again it logs in.
#[tokio::test]
async fn a_missing_role_is_refused_by_the_backend_until_created() {
    let pg = PgCluster::start().unwrap();
    let emu = start(&pg).await;
    let ws = workspace_token(&emu).await;
    let (_, v) = mint(&emu, &ws).await;
    let t = v["token"].as_str().unwrap().to_owned();
    emu.drop_role(DEFAULT_CLIENT_ID).await.unwrap();
    assert!(login(&emu, DEFAULT_CLIENT_ID, &t).await.is_err());
    assert_eq!(emu.count(lakebase_emulator::LOGINS_REJECTED), 1);
    assert_eq!(emu.count(lakebase_emulator::LOGINS_ACCEPTED), 0);
    emu.restore_roles().await.unwrap();
    login(&emu, DEFAULT_CLIENT_ID, &t).await.unwrap();
    assert_eq!(emu.count(lakebase_emulator::LOGINS_ACCEPTED), 1);
}
