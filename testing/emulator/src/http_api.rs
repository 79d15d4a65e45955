//! The workspace's HTTP API in Databricks' wire format, plus `/_emulator/*` controls.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{Method, Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::token::{self, Claims};
use crate::{Fault, FaultKind, Shared};

type Reply = Response<Full<Bytes>>;
/// What goes on the wire: a whole body, or one sent slowly (the trickle fault).
type Sent = Response<BoxBody<Bytes, Infallible>>;

/// A body sent one byte per `every`.
struct Trickle {
    rest: Bytes,
    every: Duration,
    next: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        ready!(self.next.as_mut().poll(cx));
        let deadline = tokio::time::Instant::now() + self.every;
        self.next.as_mut().reset(deadline);
        let byte = self.rest.split_to(1);
        Poll::Ready(Some(Ok(Frame::data(byte))))
    }
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                // An `Err` makes hyper close the connection without an answer (the "drop" fault).
                async move {
                    handle(req, shared)
                        .await
                        .ok_or_else(|| std::io::Error::other("dropped by fault"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json_reply(status: u16, body: Value) -> Option<Reply> {
    Some(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
}

fn api_error(status: u16, code: &str, message: &str) -> Option<Reply> {
    json_reply(status, json!({"error_code": code, "message": message}))
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// `None` means: drop the connection without answering.
async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Option<Sent> {
    // Read the whole request first, so that a fault answer never races the client's upload.
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let req = Request::from_parts(parts, body);
    let route = format!("{} {}", req.method(), req.uri().path());
    let control = req.uri().path().starts_with("/_emulator/");
    if !control {
        *shared
            .state
            .lock()
            .unwrap()
            .counts
            .entry(route.clone())
            .or_default() += 1;
    }
    // A scripted fault for this route?
    let fault = if control {
        None
    } else {
        let mut s = shared.state.lock().unwrap();
        let pos = s
            .faults
            .iter()
            .position(|f| route.starts_with(&f.route) && f.count > 0);
        pos.map(|i| {
            s.faults[i].count -= 1;
            let kind = s.faults[i].kind.clone();
            if s.faults[i].count == 0 {
                s.faults.remove(i);
            }
            kind
        })
    };
    let trickle = match &fault {
        Some(FaultKind::Trickle(every)) => Some(*every),
        _ => None,
    };
    let answer = match fault {
        Some(FaultKind::Status {
            status,
            error_code,
            message,
            retry_after,
        }) => {
            let mut r = api_error(status, &error_code, &message).unwrap();
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.into());
            }
            Some(r)
        }
        Some(FaultKind::Drop) => None,
        Some(FaultKind::Malformed) => Some(
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"token\": tru")))
                .unwrap(),
        ),
        Some(FaultKind::Html) => Some(
            Response::builder()
                .status(502)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from_static(
                    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                )))
                .unwrap(),
        ),
        Some(FaultKind::Latency(d)) => {
            tokio::time::sleep(d).await;
            route_request(req, &shared).await
        }
        Some(FaultKind::Trickle(_)) | None => route_request(req, &shared).await,
    };
    let answer = match answer {
        Some(a) => a,
        None => {
            shared.log(format!("{route} -> dropped connection (fault)"));
            return None;
        }
    };
    if !control {
        shared.log(format!("{route} -> {}", answer.status().as_u16()));
    }
    let (parts, body) = answer.into_parts();
    let body = match trickle {
        Some(every) => {
            let rest = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Trickle {
                rest,
                every,
                next: Box::pin(tokio::time::sleep(Duration::ZERO)),
            }
            .boxed()
        }
        None => body.boxed(),
    };
    Some(Response::from_parts(parts, body))
}

async fn route_request(req: Request<Bytes>, shared: &Shared) -> Option<Reply> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req.into_body();
    let base = &shared.base_url;
    match (&method, path.as_str()) {
        (&Method::GET, "/.well-known/databricks-config") => json_reply(
            200,
            json!({
                "oidc_endpoint": format!("{base}/oidc"), "workspace_id": "1234567890", "cloud": "AWS", "host_type": "workspace"
            }),
        ),
        (&Method::GET, "/oidc/.well-known/oauth-authorization-server") => json_reply(
            200,
            json!({
                "issuer": format!("{base}/oidc"),
                "token_endpoint": format!("{base}/oidc/v1/token"),
                "authorization_endpoint": format!("{base}/oidc/v1/authorize"),
                "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }),
        ),
        (&Method::POST, "/oidc/v1/token") => oauth_token(auth.as_deref(), &body, shared),
        (&Method::GET, "/api/2.0/preview/scim/v2/Me") => {
            let who = whoami(auth.as_deref(), shared)?;
            match who {
                Ok(user) => json_reply(
                    200,
                    json!({"userName": user, "id": "7001", "active": true, "displayName": user}),
                ),
                Err(r) => Some(r),
            }
        }
        (&Method::POST, "/api/2.0/postgres/credentials") => {
            let role = match whoami(auth.as_deref(), shared)? {
                Ok(r) => r,
                Err(r) => return Some(r),
            };
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return api_error(
                        400,
                        "MALFORMED_REQUEST",
                        "Could not parse request body as JSON",
                    );
                }
            };
            let Some(endpoint) = v.get("endpoint").and_then(Value::as_str) else {
                return api_error(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "Missing required field: endpoint",
                );
            };
            if !shared.opts.endpoints.iter().any(|e| e == endpoint) {
                return api_error(
                    404,
                    "NOT_FOUND",
                    &format!("Endpoint '{endpoint}' does not exist."),
                );
            }
            let (token, exp) = mint(shared, &role, endpoint);
            json_reply(
                200,
                json!({"token": token, "expire_time": format_time(exp, shared)}),
            )
        }
        (&Method::POST, "/api/2.0/database/credentials") => {
            let role = match whoami(auth.as_deref(), shared)? {
                Ok(r) => r,
                Err(r) => return Some(r),
            };
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return api_error(
                        400,
                        "MALFORMED_REQUEST",
                        "Could not parse request body as JSON",
                    );
                }
            };
            let names: Vec<String> = v
                .get("instance_names")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let Some(instance) = names.first() else {
                return api_error(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "instance_names must name one instance",
                );
            };
            match v.get("request_id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => {
                    shared
                        .state
                        .lock()
                        .unwrap()
                        .request_ids
                        .insert(id.to_owned());
                }
                _ => {
                    return api_error(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        "Missing required field: request_id",
                    );
                }
            }
            if !shared.opts.instances.contains(instance) {
                return api_error(
                    404,
                    "NOT_FOUND",
                    &format!("Database instance '{instance}' does not exist."),
                );
            }
            let (token, exp) = mint(shared, &role, instance);
            json_reply(
                200,
                json!({"token": token, "expiration_time": format_time(exp, shared)}),
            )
        }
        (&Method::GET, p) if p.starts_with("/api/2.0/postgres/projects/") => {
            if let Err(r) = whoami(auth.as_deref(), shared)? {
                return Some(r);
            }
            let name = &p["/api/2.0/postgres/".len()..];
            if !shared.opts.endpoints.iter().any(|e| e == name) {
                return api_error(
                    404,
                    "NOT_FOUND",
                    &format!("Endpoint '{name}' does not exist."),
                );
            }
            let host = shared.pg_addr.ip().to_string();
            json_reply(
                200,
                json!({
                    "name": name,
                    "status": {
                        "hosts": {"host": host, "read_only_host": host, "read_write_pooled_host": host},
                        "endpoint_type": "ENDPOINT_TYPE_READ_WRITE",
                        "current_state": "ACTIVE",
                    },
                    "emulator_port": shared.pg_addr.port(),
                }),
            )
        }
        (&Method::GET, p) if p.starts_with("/api/2.0/database/instances/") => {
            if let Err(r) = whoami(auth.as_deref(), shared)? {
                return Some(r);
            }
            let name = &p["/api/2.0/database/instances/".len()..];
            if !shared.opts.instances.iter().any(|e| e == name) {
                return api_error(
                    404,
                    "NOT_FOUND",
                    &format!("Database instance '{name}' does not exist."),
                );
            }
            json_reply(
                200,
                json!({"name": name, "read_write_dns": shared.pg_addr.ip().to_string(), "state": "AVAILABLE", "emulator_port": shared.pg_addr.port()}),
            )
        }
        // Controls for tests and the run command.
        (&Method::GET, "/_emulator/counts") => {
            json_reply(200, json!(shared.state.lock().unwrap().counts))
        }
        (&Method::GET, "/_emulator/sessions") => {
            use std::sync::atomic::Ordering;
            json_reply(
                200,
                json!({
                    "open": shared.sessions_open.load(Ordering::SeqCst),
                    "max": shared.sessions_max.load(Ordering::SeqCst),
                }),
            )
        }
        (&Method::POST, "/_emulator/reset") => {
            shared.state.lock().unwrap().counts.clear();
            json_reply(200, json!({}))
        }
        (&Method::POST, "/_emulator/startup-options") => {
            let mode = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["mode"].as_str().and_then(crate::StartupOptions::parse));
            match mode {
                Some(mode) => {
                    shared.state.lock().unwrap().startup_options = mode;
                    json_reply(200, json!({}))
                }
                None => api_error(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "startup-options must be {\"mode\": \"forward\"|\"drop\"|\"refuse\"}",
                ),
            }
        }
        (&Method::POST, "/_emulator/faults") => match parse_fault(&body) {
            Some(f) => {
                shared.state.lock().unwrap().faults.push_back(f);
                json_reply(200, json!({}))
            }
            None => api_error(
                400,
                "INVALID_PARAMETER_VALUE",
                "fault must be {\"route\",\"count\",\"status\",\"error_code\",\"message\",\"retry_after\"} or {\"route\",\"count\",\"kind\":\"drop\"|\"malformed\"|\"html\"|\"latency\",\"latency_ms\"} or {\"route\",\"count\",\"kind\":\"trickle\",\"interval_ms\"}",
            ),
        },
        _ => api_error(
            404,
            "ENDPOINT_NOT_FOUND",
            &format!("No API found for '{method} {path}'"),
        ),
    }
}

fn parse_fault(body: &[u8]) -> Option<Fault> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let route = v.get("route")?.as_str()?.to_owned();
    let count = v.get("count").and_then(Value::as_u64).unwrap_or(1) as u32;
    let kind = match v.get("kind").and_then(Value::as_str) {
        Some("drop") => FaultKind::Drop,
        Some("malformed") => FaultKind::Malformed,
        Some("html") => FaultKind::Html,
        Some("latency") => {
            FaultKind::Latency(Duration::from_millis(v.get("latency_ms")?.as_u64()?))
        }
        Some("trickle") => {
            FaultKind::Trickle(Duration::from_millis(v.get("interval_ms")?.as_u64()?))
        }
        _ => FaultKind::Status {
            status: v.get("status")?.as_u64()? as u16,
            error_code: v
                .get("error_code")
                .and_then(Value::as_str)
                .unwrap_or("TEMPORARILY_UNAVAILABLE")
                .to_owned(),
            message: v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("injected fault")
                .to_owned(),
            retry_after: v.get("retry_after").and_then(Value::as_u64),
        },
    };
    Some(Fault { route, count, kind })
}

fn oauth_token(auth: Option<&str>, body: &[u8], shared: &Shared) -> Option<Reply> {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body).into_owned().collect();
    let oauth_error = |status: u16, err: &str, desc: &str| {
        json_reply(status, json!({"error": err, "error_description": desc}))
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let creds = auth
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
        // client_secret_post is accepted too.
        .or_else(|| {
            Some((
                form.get("client_id")?.clone(),
                form.get("client_secret")?.clone(),
            ))
        });
    let Some((id, secret)) = creds else {
        return oauth_error(
            401,
            "invalid_client",
            "Client authentication failed: no client credentials",
        );
    };
    if !shared
        .opts
        .service_principals
        .iter()
        .any(|(i, s)| *i == id && *s == secret)
    {
        shared.log(format!("oauth: invalid_client for client {id}"));
        return oauth_error(401, "invalid_client", "Client authentication failed");
    }
    let token = format!(
        "ws-{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let ttl = shared.state.lock().unwrap().workspace_token_ttl.as_secs();
    let exp = now().timestamp() + ttl as i64;
    shared
        .state
        .lock()
        .unwrap()
        .workspace_tokens
        .insert(token.clone(), (id.clone(), exp));
    shared.state.lock().unwrap().issued.push(token.clone());
    shared.log(format!(
        "oauth: workspace token {} for client {id}",
        token::fingerprint(&token)
    ));
    json_reply(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": form.get("scope").cloned().unwrap_or_else(|| "all-apis".into())}),
    )
}

/// The caller's identity (its Postgres role) from the bearer token; `Err` is the 401 to send.
#[allow(clippy::result_large_err)]
fn whoami(auth: Option<&str>, shared: &Shared) -> Option<Result<String, Reply>> {
    let unauthenticated = |m: &str| Err(api_error(401, "UNAUTHENTICATED", m).unwrap());
    let Some(token) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
        return Some(unauthenticated(
            "Credential was not sent or was of an unsupported type for this API.",
        ));
    };
    if let Some((_, user)) = shared.opts.pats.iter().find(|(t, _)| t == token) {
        return Some(Ok(user.clone()));
    }
    let s = shared.state.lock().unwrap();
    Some(match s.workspace_tokens.get(token) {
        Some((id, exp)) if *exp > now().timestamp() => Ok(id.clone()),
        Some(_) => unauthenticated("Token expired."),
        None => unauthenticated("Invalid access token."),
    })
}

fn mint(shared: &Shared, role: &str, aud: &str) -> (String, DateTime<Utc>) {
    let ttl = shared.state.lock().unwrap().db_token_ttl;
    let issued = now();
    let exp = issued + chrono::Duration::from_std(ttl).unwrap();
    let claims = Claims {
        sub: role.to_owned(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: issued.timestamp(),
        exp: exp.timestamp(),
        aud: aud.to_owned(),
        pad: "L".repeat(410),
    };
    let token = token::sign(&shared.key, &claims);
    {
        let mut state = shared.state.lock().unwrap();
        state.minted.push(claims.jti.clone());
        state.mint_times.push(std::time::Instant::now());
        state.issued.push(token.clone());
    }
    shared.log(format!(
        "minted database token {} for role {role} on {aud} (ttl {}s)",
        token::fingerprint(&token),
        ttl.as_secs()
    ));
    (token, DateTime::from_timestamp(exp.timestamp(), 0).unwrap())
}

fn format_time(t: DateTime<Utc>, shared: &Shared) -> String {
    let digits = shared.state.lock().unwrap().fraction_digits;
    let fmt = match digits {
        0 => SecondsFormat::Secs,
        1..=3 => SecondsFormat::Millis,
        4..=6 => SecondsFormat::Micros,
        _ => SecondsFormat::Nanos,
    };
    t.to_rfc3339_opts(fmt, true)
}
