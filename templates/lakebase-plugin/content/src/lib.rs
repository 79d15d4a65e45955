use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;
use spin_sdk::pg::Connection;

/// Answers `{"user": <current_user>}` through plain `spin:postgres`: the address `lakebase:` is
/// opened by the lakebase plugin with a cached (or freshly minted) OAuth credential.
#[http_service]
async fn handle_{{project-name | snake_case}}(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let (status, body) = match current_user().await {
        Ok(user) => (200, serde_json::json!({ "user": user })),
        Err(e) => {
            // The details go to the log; the caller learns only who must act. The plugin's
            // errors read `lakebase <kind>: …`.
            let text = e.to_string();
            eprintln!("{{project-name | kebab_case}}: {text}");
            let kind = text
                .split_once("lakebase ")
                .and_then(|(_, rest)| rest.split_once(':'))
                .map_or("database", |(kind, _)| kind);
            (502, serde_json::json!({ "error": kind }))
        }
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string()))
}

async fn current_user() -> anyhow::Result<String> {
    let db = Connection::open("lakebase:").await?;
    let rows = db.query("SELECT current_user::text AS user", &[]).await?.collect().await?;
    Ok(rows
        .first()
        .and_then(|r| r.get::<String>("user"))
        .unwrap_or_default())
}
