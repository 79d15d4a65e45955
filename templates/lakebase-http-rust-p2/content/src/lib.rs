use lakebase_spin_p2::spin::database_error;
use spin_sdk::http::{IncomingRequest, Response, ResponseOutparam};
use spin_sdk::http_component;

/// Answers, then refreshes the credential when it is due: the client has its answer first, so
/// no request waits for a rotation's mint or for a failing workspace, only a cold start does.
#[http_component]
async fn handle_{{project-name | snake_case}}(_req: IncomingRequest, out: ResponseOutparam) {
    lakebase_spin_p2::spin::serve_then_refresh(out, answer()).await
}

/// `{"user": <current_user>, "credential": {"source": …, "expires_in_s": …}}`, logged in to
/// Lakebase with a cached (or freshly minted) OAuth credential.
async fn answer() -> Response {
    let (status, body) = match current_user().await {
        Ok(body) => (200, body),
        Err(e) => {
            // The message names what to fix (a variable, a role, a host) and never holds a
            // secret, but it is for the operator: it goes to the log, the client gets the kind.
            eprintln!("{{project-name | kebab_case}}: {} error: {e}", e.kind().as_str());
            let status = match e.kind() {
                lakebase_spin_p2::ErrorKind::Unavailable => 503,
                lakebase_spin_p2::ErrorKind::Configuration => 500,
                _ => 502,
            };
            (status, serde_json::json!({"error": {"kind": e.kind().as_str()}}))
        }
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

async fn current_user() -> Result<serde_json::Value, lakebase_spin_p2::Error> {
    let db = lakebase_spin_p2::spin::connect().await?;
    let rows = db
        .connection
        .query("SELECT current_user::text AS user", &[])
        .map_err(database_error)?;
    let user = rows.rows().next().and_then(|r| r.get::<String>("user"));
    let expires_in = db.credential.expires_in(lakebase_spin_p2::SystemClock.now());
    Ok(serde_json::json!({
        "user": user,
        "credential": {
            "source": db.source.as_str(),
            "expires_in_s": expires_in.as_secs(),
        }
    }))
}
