use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::pg4::{Connection, DbValue};

/// Answers `{"user": <current_user>}` through plain `spin:postgres@4.0.0`: the address
/// `lakebase:` is opened by the WASIp2 lakebase plugin with a cached (or freshly minted) OAuth
/// credential.
#[spin_sdk::http_component]
fn handle_{{project-name | snake_case}}(_req: IncomingRequest) -> Response {
    let (status, body) = match current_user() {
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
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

fn current_user() -> anyhow::Result<String> {
    let db = Connection::open("lakebase:")?;
    let rows = db.query("SELECT current_user::text AS user", &[])?.rows;
    Ok(match rows.first().and_then(|r| r.first()) {
        Some(DbValue::Str(user)) => user.clone(),
        _ => String::new(),
    })
}
