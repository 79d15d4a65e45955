//! The Databricks workspace wire format as plain data: every request the library sends is built
//! here, and every answer is parsed here into typed values. No I/O, no clock: `workspace.rs`
//! sends what this builds and decides what the parsed answers mean.

use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, header};
use serde::Deserialize;

use crate::config::{Target, WorkspaceAuth, var};
use crate::error::{Cause, Error, ErrorKind};
use crate::host::HttpRequest;
use crate::secret::Secret;

/// `POST <workspace>/oidc/v1/token`, client credentials in Basic auth (`basic` is
/// `base64(client_id:client_secret)`).
pub(crate) fn token_request(workspace: &str, basic: &str) -> HttpRequest {
    let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic invalid"));
    auth.set_sensitive(true);
    request(Method::POST, &format!("{workspace}/oidc/v1/token"), auth)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(b"grant_type=client_credentials&scope=all-apis".to_vec())
        .unwrap_or_default()
}

/// A workspace API call with the bearer token and an optional JSON body.
pub(crate) fn api_request(
    method: Method,
    url: &str,
    bearer: &Secret,
    body: Option<&[u8]>,
) -> HttpRequest {
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", bearer.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    auth.set_sensitive(true);
    let mut b = request(method, url, auth);
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(body.map(<[u8]>::to_vec).unwrap_or_default())
        .unwrap_or_default()
}

fn request(method: Method, url: &str, auth: HeaderValue) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, auth)
        .header(header::ACCEPT, "application/json")
}

/// The credential call of a target: path and JSON body. Autoscaling:
/// `POST /api/2.0/postgres/credentials {"endpoint"}`; Provisioned:
/// `POST /api/2.0/database/credentials {"instance_names", "request_id"}`.
pub(crate) fn credential_call(target: &Target, request_id: &str) -> (&'static str, Vec<u8>) {
    let body = match target {
        Target::Endpoint(endpoint) => serde_json::json!({ "endpoint": endpoint }),
        Target::Instance(instance) => {
            serde_json::json!({ "instance_names": [instance], "request_id": request_id })
        }
    };
    let path = match target {
        Target::Endpoint(_) => "/api/2.0/postgres/credentials",
        Target::Instance(_) => "/api/2.0/database/credentials",
    };
    (path, serde_json::to_vec(&body).unwrap_or_default())
}

/// The name of the expiry field of a target's credential answer (they differ: a known bug in
/// the wild reads the wrong one).
pub(crate) fn expiry_field(target: &Target) -> &'static str {
    match target {
        Target::Endpoint(_) => "expire_time",
        Target::Instance(_) => "expiration_time",
    }
}

/// The host look-up path of a target.
pub(crate) fn host_lookup_path(target: &Target) -> String {
    match target {
        Target::Endpoint(e) => format!("/api/2.0/postgres/{e}"),
        Target::Instance(i) => format!("/api/2.0/database/instances/{i}"),
    }
}

/// SCIM `Me`: the calling user.
pub(crate) const ME_PATH: &str = "/api/2.0/preview/scim/v2/Me";

/// An OAuth token answer: the token (non-empty) and `expires_in` seconds, if readable.
pub(crate) fn parse_token(body: &[u8]) -> Option<(String, Option<i64>)> {
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: Option<String>,
        expires_in: Option<Seconds>,
    }
    let a: TokenAnswer = serde_json::from_slice(body).ok()?;
    let token = a.access_token.filter(|t| !t.is_empty())?;
    Some((token, a.expires_in.and_then(Seconds::get)))
}

/// `expires_in` as a number (integer or not) or a numeric string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Int(i64),
    Float(f64),
    Text(String),
    Other(#[allow(dead_code)] serde_json::Value),
}

impl Seconds {
    fn get(self) -> Option<i64> {
        match self {
            Seconds::Int(n) => Some(n),
            Seconds::Float(f) if f.is_finite() => Some(f as i64),
            Seconds::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A database credential answer: the token (non-empty) and the expiry from the target's field,
/// if present and readable RFC 3339.
pub(crate) fn parse_credential(
    target: &Target,
    body: &[u8],
) -> Option<(String, Option<DateTime<Utc>>)> {
    #[derive(Deserialize)]
    struct CredentialAnswer {
        token: Option<String>,
        expire_time: Option<serde_json::Value>,
        expiration_time: Option<serde_json::Value>,
    }
    let a: CredentialAnswer = serde_json::from_slice(body).ok()?;
    let token = a.token.filter(|t| !t.is_empty())?;
    let field = match target {
        Target::Endpoint(_) => a.expire_time,
        Target::Instance(_) => a.expiration_time,
    };
    let expiry = field
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(parse_expiry);
    Some((token, expiry))
}

/// A host look-up answer: `None` if unreadable, `Some(None)` if it has no host (yet).
/// Autoscaling: `status.hosts.host`; Provisioned: `read_write_dns`.
pub(crate) fn parse_host(target: &Target, body: &[u8]) -> Option<Option<String>> {
    #[derive(Deserialize)]
    struct Endpoint {
        status: Option<Status>,
    }
    #[derive(Deserialize)]
    struct Status {
        hosts: Option<Hosts>,
    }
    #[derive(Deserialize)]
    struct Hosts {
        host: Option<String>,
    }
    #[derive(Deserialize)]
    struct Instance {
        read_write_dns: Option<String>,
    }
    let host = match target {
        Target::Endpoint(_) => {
            let e: Endpoint = serde_json::from_slice(body).ok()?;
            e.status.and_then(|s| s.hosts).and_then(|h| h.host)
        }
        Target::Instance(_) => {
            let i: Instance = serde_json::from_slice(body).ok()?;
            i.read_write_dns
        }
    };
    Some(host.filter(|h| !h.is_empty()))
}

/// SCIM `Me.userName`, if present.
pub(crate) fn parse_user(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Me {
        #[serde(rename = "userName")]
        user_name: Option<String>,
    }
    let me: Me = serde_json::from_slice(body).ok()?;
    me.user_name.filter(|u| !u.is_empty())
}

/// A short summary of an error body: `CODE: message` (Databricks), `error: description`
/// (OAuth2), the text itself, or what kind of body it was. Not yet scrubbed or capped.
pub(crate) fn error_summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error_code: Option<serde_json::Value>,
        message: Option<serde_json::Value>,
        error: Option<serde_json::Value>,
        error_description: Option<serde_json::Value>,
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "empty body".to_owned();
    }
    let Ok(e) = serde_json::from_str::<ErrorBody>(trimmed) else {
        return if trimmed.starts_with('<') {
            "an HTML page".to_owned()
        } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
            "unrecognised JSON body".to_owned()
        } else {
            trimmed.to_owned()
        };
    };
    let s = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(str::to_owned));
    match (
        s(e.error_code),
        s(e.message),
        s(e.error),
        s(e.error_description),
    ) {
        (Some(code), Some(msg), _, _) => format!("{code}: {msg}"),
        (Some(code), None, _, _) => code,
        (None, Some(msg), _, _) => msg,
        (None, None, Some(err), Some(desc)) => format!("{err}: {desc}"),
        (None, None, Some(err), None) => err,
        _ => "unrecognised JSON body".to_owned(),
    }
}

/// The error for a non-2xx answer to `what` that is not retried (or no longer), grouped by who
/// must act. `message` is the scrubbed [`error_summary`] of the body.
pub(crate) fn status_error(
    status: u16,
    message: &str,
    what: &str,
    auth: &WorkspaceAuth,
    target: &Target,
    workspace: &str,
) -> Error {
    let (kind, advice) = match status {
        401 => (
            ErrorKind::WorkspaceAuth,
            match auth {
                WorkspaceAuth::Pat(_) => format!(
                    "the workspace rejected the personal access token: check `{}` (expired or revoked?)",
                    var::DATABRICKS_TOKEN
                ),
                WorkspaceAuth::OAuthM2M { .. } => format!(
                    "the workspace rejected a fresh OAuth token: check `{}` and `{}`",
                    var::DATABRICKS_CLIENT_ID,
                    var::DATABRICKS_CLIENT_SECRET
                ),
            },
        ),
        403 => (
            ErrorKind::Permission,
            format!(
                "the principal lacks permission for {what} on `{}`: grant it access to the Lakebase {} in Databricks",
                target.name(),
                if matches!(target, Target::Endpoint(_)) {
                    "project"
                } else {
                    "instance"
                }
            ),
        ),
        404 => (
            ErrorKind::NotFound,
            format!(
                "`{}` was not found in {workspace}: check `{}`",
                target.name(),
                target.variable()
            ),
        ),
        400 | 409 | 422 => (
            ErrorKind::BadRequest,
            format!(
                "databricks refused {what} as invalid: check `{}`",
                target.variable()
            ),
        ),
        _ => (
            ErrorKind::Unavailable,
            format!("databricks failed to answer {what}"),
        ),
    };
    let reason = http::StatusCode::from_u16(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| status.to_string());
    Error::new(kind, format!("{advice} (HTTP {status}: {message})"))
        .with_source(Cause(format!("HTTP {reason}")))
}

/// RFC 3339 with any number of fractional digits, `Z` or an offset.
pub(crate) fn parse_expiry(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Target {
        Target::Endpoint("projects/p/branches/b/endpoints/e".into())
    }

    fn instance() -> Target {
        Target::Instance("inst-1".into())
    }

    #[test]
    fn expiry_with_and_without_fractions() {
        let base = parse_expiry("2026-02-06T18:00:00Z").unwrap();
        assert_eq!(base.timestamp(), 1_770_400_800);
        for s in [
            "2026-02-06T18:00:00.000Z",
            "2026-02-06T18:00:00.123456Z",
            "2026-02-06T18:00:00.123456789Z",
            "2026-02-06T19:00:00+01:00",
        ] {
            assert_eq!(
                parse_expiry(s).unwrap().timestamp(),
                base.timestamp(),
                "{s}"
            );
        }
        assert!(parse_expiry("tomorrow").is_none());
        assert!(parse_expiry("").is_none());
    }

    #[test]
    fn requests_are_what_databricks_expects() {
        let r = token_request("https://adb-1.cloud.databricks.com", "Y2lkOnNlYw==");
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri(), "https://adb-1.cloud.databricks.com/oidc/v1/token");
        assert_eq!(r.headers()[header::AUTHORIZATION], "Basic Y2lkOnNlYw==");
        assert!(r.headers()[header::AUTHORIZATION].is_sensitive());
        assert_eq!(r.body(), b"grant_type=client_credentials&scope=all-apis");
        let r = api_request(
            Method::GET,
            "https://h/api/2.0/x",
            &Secret::new("tok"),
            None,
        );
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer tok");
        assert!(r.headers()[header::AUTHORIZATION].is_sensitive());
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
        let (path, body) = credential_call(&endpoint(), "id-1");
        assert_eq!(path, "/api/2.0/postgres/credentials");
        assert_eq!(body, br#"{"endpoint":"projects/p/branches/b/endpoints/e"}"#);
        let (path, body) = credential_call(&instance(), "id-1");
        assert_eq!(path, "/api/2.0/database/credentials");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"instance_names": ["inst-1"], "request_id": "id-1"})
        );
        assert_eq!(
            host_lookup_path(&endpoint()),
            "/api/2.0/postgres/projects/p/branches/b/endpoints/e"
        );
        assert_eq!(
            host_lookup_path(&instance()),
            "/api/2.0/database/instances/inst-1"
        );
    }

    #[test]
    fn token_answers() {
        type Parsed<'a> = Option<(&'a str, Option<i64>)>;
        let cases: [(&str, Parsed); 7] = [
            (
                r#"{"access_token":"eyJ","token_type":"Bearer","expires_in":3600,"scope":"all-apis"}"#,
                Some(("eyJ", Some(3600))),
            ),
            (
                r#"{"access_token":"eyJ","expires_in":"3599"}"#,
                Some(("eyJ", Some(3599))),
            ),
            (
                r#"{"access_token":"eyJ","expires_in":3600.0}"#,
                Some(("eyJ", Some(3600))),
            ),
            (
                r#"{"access_token":"eyJ","expires_in":null}"#,
                Some(("eyJ", None)),
            ),
            (
                r#"{"access_token":"eyJ","expires_in":{"x":1}}"#,
                Some(("eyJ", None)),
            ),
            (r#"{"access_token":""}"#, None),
            ("<html>", None),
        ];
        for (body, want) in cases {
            let got = parse_token(body.as_bytes());
            assert_eq!(got.as_ref().map(|(t, l)| (t.as_str(), *l)), want, "{body}");
        }
    }

    #[test]
    fn credential_answers_read_the_field_of_their_api() {
        let autoscaling = br#"{"token":"eyJa","expire_time":"2026-02-06T18:00:00.123Z"}"#;
        let (t, e) = parse_credential(&endpoint(), autoscaling).unwrap();
        assert_eq!(
            (t.as_str(), e.unwrap().timestamp()),
            ("eyJa", 1_770_400_800)
        );
        let provisioned = br#"{"token":"eyJp","expiration_time":"2026-02-06T18:00:00Z"}"#;
        assert!(
            parse_credential(&instance(), provisioned)
                .unwrap()
                .1
                .is_some()
        );
        // The other API's field is not read.
        assert!(
            parse_credential(&endpoint(), provisioned)
                .unwrap()
                .1
                .is_none()
        );
        assert!(
            parse_credential(&instance(), autoscaling)
                .unwrap()
                .1
                .is_none()
        );
        assert!(
            parse_credential(&endpoint(), br#"{"token":"eyJ","expire_time":"soon"}"#)
                .unwrap()
                .1
                .is_none()
        );
        assert!(
            parse_credential(&endpoint(), br#"{"token":"eyJ","expire_time":7}"#)
                .unwrap()
                .1
                .is_none()
        );
        assert!(parse_credential(&endpoint(), br#"{"token":""}"#).is_none());
        assert!(parse_credential(&endpoint(), b"not json").is_none());
    }

    #[test]
    fn host_and_user_answers() {
        let e = br#"{"name":"projects/p/branches/b/endpoints/e","status":{"endpoint_type":"ENDPOINT_TYPE_READ_WRITE","hosts":{"host":"ep-1.database.us-east-1.cloud.databricks.com","read_only_host":"ep-1-ro"}}}"#;
        assert_eq!(
            parse_host(&endpoint(), e),
            Some(Some("ep-1.database.us-east-1.cloud.databricks.com".into()))
        );
        assert_eq!(
            parse_host(&endpoint(), br#"{"status":{}}"#),
            Some(None),
            "starting"
        );
        assert_eq!(
            parse_host(&endpoint(), br#"{"status":{"hosts":{"host":""}}}"#),
            Some(None)
        );
        assert_eq!(
            parse_host(
                &instance(),
                br#"{"name":"inst-1","read_write_dns":"instance-1.database.cloud.databricks.com"}"#
            ),
            Some(Some("instance-1.database.cloud.databricks.com".into()))
        );
        assert_eq!(parse_host(&endpoint(), b"<html>"), None);
        assert_eq!(
            parse_user(br#"{"userName":"someone@example.com","id":"1"}"#).as_deref(),
            Some("someone@example.com")
        );
        assert_eq!(parse_user(br#"{"id":"1"}"#), None);
    }

    #[test]
    fn statuses_are_grouped_by_who_must_act() {
        let sp = WorkspaceAuth::OAuthM2M {
            client_id: "c".into(),
            client_secret: Secret::new("s"),
        };
        let pat = WorkspaceAuth::Pat(Secret::new("dapi1"));
        let ws = "https://adb-1.cloud.databricks.com";
        let cases: [(u16, &WorkspaceAuth, Target, ErrorKind, &str); 8] = [
            (
                401,
                &pat,
                endpoint(),
                ErrorKind::WorkspaceAuth,
                "`databricks_token`",
            ),
            (
                401,
                &sp,
                endpoint(),
                ErrorKind::WorkspaceAuth,
                "`databricks_client_secret`",
            ),
            (
                403,
                &sp,
                endpoint(),
                ErrorKind::Permission,
                "Lakebase project",
            ),
            (
                403,
                &sp,
                instance(),
                ErrorKind::Permission,
                "Lakebase instance",
            ),
            (
                404,
                &sp,
                endpoint(),
                ErrorKind::NotFound,
                "check `lakebase_endpoint`",
            ),
            (
                404,
                &sp,
                instance(),
                ErrorKind::NotFound,
                "check `lakebase_instance`",
            ),
            (409, &sp, endpoint(), ErrorKind::BadRequest, "refused"),
            (
                500,
                &sp,
                endpoint(),
                ErrorKind::Unavailable,
                "failed to answer",
            ),
        ];
        for (status, auth, target, kind, advice) in cases {
            let e = status_error(status, "CODE: said", "the call", auth, &target, ws);
            assert_eq!(e.kind(), kind, "{status}");
            let text = e.to_string();
            assert!(text.contains(advice), "{status}: {text}");
            assert!(
                text.ends_with(&format!("(HTTP {status}: CODE: said)")),
                "{text}"
            );
        }
    }

    #[test]
    fn error_bodies_seen_in_the_wild() {
        let cases = [
            (
                r#"{"error_code":"PERMISSION_DENIED","message":"User does not have USE on project","details":[]}"#,
                "PERMISSION_DENIED: User does not have USE on project",
            ),
            (r#"{"error_code":"NOT_FOUND"}"#, "NOT_FOUND"),
            (
                r#"{"message":"Token is expiring within 30 seconds"}"#,
                "Token is expiring within 30 seconds",
            ),
            (
                r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
                "invalid_client: Client authentication failed",
            ),
            (
                r#"{"error":"temporarily_unavailable"}"#,
                "temporarily_unavailable",
            ),
            (r#"{"error_code":5}"#, "unrecognised JSON body"),
            (r#"[1,2]"#, "unrecognised JSON body"),
            ("<html><body>502 Bad Gateway</body></html>", "an HTML page"),
            ("upstream connect error", "upstream connect error"),
            ("   ", "empty body"),
        ];
        for (body, want) in cases {
            assert_eq!(error_summary(body.as_bytes()), want, "{body}");
        }
    }
}
