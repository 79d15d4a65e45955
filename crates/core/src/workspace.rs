//! The workspace client: the Databricks REST API as one type that owns the OAuth workspace
//! token (memory → key-value → token endpoint) and sends every call through the one retry loop.
//! Requests and answers are built and parsed in `protocol.rs`; what they mean is decided here.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::Method;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Target, WorkspaceAuth, var};
use crate::deadline::{HTTP_TIMEOUT, MAX_BODY, within};
use crate::error::{Cause, Error, ErrorKind};
use crate::expiry::{ASSUMED_LIFETIME, Expiring, workspace_token_until};
use crate::host::{Clock, HostError, HostFailure, Http, HttpRequest, HttpResponse, Kv};
use crate::log;
use crate::protocol;
use crate::retry::{
    self, Attempt, Stop, is_retryable_status, retry_after, transport_configuration_error,
};
use crate::seams::Seams;
use crate::secret::{Secret, scrub};
use crate::tier::{Cached, Tier};

/// A minted database token and the server's expiry.
pub(crate) struct Minted {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

/// An OAuth workspace token and until when it is used.
#[derive(Clone)]
pub(crate) struct WorkspaceToken {
    token: Secret,
    until: DateTime<Utc>,
}

impl Expiring for WorkspaceToken {
    fn usable_until(&self) -> DateTime<Utc> {
        self.until
    }
}

/// The key-value form of a workspace token.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkspaceTokenRecord {
    v: u32,
    token: String,
    /// Unix seconds after which it is not used.
    until: i64,
}

impl Cached for WorkspaceToken {
    type Record = WorkspaceTokenRecord;
    const WHAT: &'static str = "workspace token";

    fn to_record(&self) -> WorkspaceTokenRecord {
        WorkspaceTokenRecord {
            v: crate::cache::RECORD_VERSION,
            token: self.token.expose().to_owned(),
            until: self.until.timestamp(),
        }
    }

    fn from_record(r: WorkspaceTokenRecord) -> Option<Self> {
        if r.v != crate::cache::RECORD_VERSION || r.token.is_empty() {
            return None;
        }
        Some(WorkspaceToken {
            token: Secret::new(r.token),
            until: DateTime::from_timestamp(r.until, 0)?,
        })
    }
}

/// One workspace, one principal, one endpoint or instance.
pub(crate) struct WorkspaceClient {
    url: String,
    auth: WorkspaceAuth,
    target: Target,
    /// The OAuth token (unused with a PAT).
    token: Tier<WorkspaceToken>,
}

impl WorkspaceClient {
    pub fn new(config: &Config, token_key: String) -> Self {
        WorkspaceClient {
            url: config.workspace.clone(),
            auth: config.auth.clone(),
            target: config.target.clone(),
            token: Tier::new(token_key),
        }
    }

    /// Mints a database credential for the configured endpoint or instance.
    pub async fn mint<H: Http, K: Kv, C: Clock>(
        &self,
        seams: &Seams<H, K, C>,
    ) -> Result<Minted, Error> {
        let target = &self.target;
        let (path, body) = protocol::credential_call(target, &uuid::Uuid::new_v4().to_string());
        let what = "the database credential request";
        let answer = self
            .call(seams, Method::POST, path, Some(&body), what)
            .await?;
        let (token, expiry) =
            protocol::parse_credential(target, &answer).ok_or_else(|| unreadable(what))?;
        let expires_at = match expiry {
            Some(t) => t,
            None => {
                log::warn(&format!(
                    "the credential response has no readable `{}`; assuming it expires in one hour",
                    protocol::expiry_field(target)
                ));
                let now = seams.clock.now();
                now.checked_add_signed(ASSUMED_LIFETIME).unwrap_or(now)
            }
        };
        Ok(Minted {
            token: Secret::new(token),
            expires_at,
        })
    }

    /// The Postgres host of the endpoint or instance.
    pub async fn lookup_host<H: Http, K: Kv, C: Clock>(
        &self,
        seams: &Seams<H, K, C>,
    ) -> Result<String, Error> {
        let what = "the host look-up";
        let target = &self.target;
        let path = protocol::host_lookup_path(target);
        let answer = self.call(seams, Method::GET, &path, None, what).await?;
        let host = protocol::parse_host(target, &answer).ok_or_else(|| unreadable(what))?;
        if let Some(h) = &host
            && !crate::config::is_plain_host(h)
        {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the host look-up of `{}` answered something that is not a host name: set `{}`",
                    target.name(),
                    var::PGHOST
                ),
            ));
        }
        host.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "`{}` has no host yet (is it starting?): try again, or set `{}`",
                    target.name(),
                    var::PGHOST
                ),
            )
        })
    }

    /// The calling user's name (SCIM `Me.userName`), the Postgres role of a PAT user.
    pub async fn lookup_user<H: Http, K: Kv, C: Clock>(
        &self,
        seams: &Seams<H, K, C>,
    ) -> Result<String, Error> {
        let what = "the user look-up";
        let answer = self
            .call(seams, Method::GET, protocol::ME_PATH, None, what)
            .await?;
        protocol::parse_user(&answer).ok_or_else(|| unreadable(what))
    }

    /// The workspace bearer token: the PAT, or an OAuth M2M token from memory, the key-value
    /// store, or the token endpoint. `refresh` skips both caches.
    async fn bearer<H: Http, K: Kv, C: Clock>(
        &self,
        seams: &Seams<H, K, C>,
        refresh: bool,
    ) -> Result<Secret, Error> {
        let (client_id, client_secret) = match &self.auth {
            WorkspaceAuth::Pat(token) => return Ok(token.clone()),
            WorkspaceAuth::OAuthM2M {
                client_id,
                client_secret,
            } => (client_id, client_secret),
        };
        // Only the request that holds the instance's load ticket gets here, so no two fetches
        // race inside one instance.
        let now = seams.clock.now();
        if !refresh {
            if let Some(t) = self.token.fresh_in_memory(now) {
                return Ok(t.token);
            }
            let any = |_: &WorkspaceToken| Ok(());
            if let Some(t) = self
                .token
                .fresh_from_store(&seams.cache, &seams.kv(), now, any)
                .await
            {
                return Ok(t.token);
            }
        }
        let fetched = self
            .fetch_oauth_token(seams, client_id, client_secret)
            .await?;
        self.token
            .keep(&seams.cache, &seams.kv(), &fetched, seams.clock.now())
            .await;
        Ok(fetched.token)
    }

    async fn fetch_oauth_token<H: Http, K: Kv, C: Clock>(
        &self,
        seams: &Seams<H, K, C>,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<WorkspaceToken, Error> {
        let basic = basic_credentials(client_id, client_secret);
        let what = "the OAuth token request";
        let build = || protocol::token_request(&self.url, &basic);
        let response = self.send(seams, build, what).await?;
        let status = response.status().as_u16();
        let body = response.body();
        if matches!(status, 400 | 401 | 403) {
            return Err(Error::new(
                ErrorKind::WorkspaceAuth,
                format!(
                    "the workspace rejected the service principal's credentials ({}): check `{}` and `{}`",
                    self.server_message(body),
                    var::DATABRICKS_CLIENT_ID,
                    var::DATABRICKS_CLIENT_SECRET
                ),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(self.status_error(&response, what));
        }
        let (token, lifetime) = protocol::parse_token(body).ok_or_else(|| unreadable(what))?;
        log::info(&format!(
            "obtained an OAuth workspace token for client {client_id}"
        ));
        Ok(WorkspaceToken {
            token: Secret::new(token),
            until: workspace_token_until(seams.clock.now(), lifetime),
        })
    }

    /// Calls a workspace API with the bearer token; on 401 (or 403 "expiring") with an OAuth
    /// token, fetches a new token and tries once more.
    async fn call<H: Http, K: Kv, C: Clock>(
        &self,
        seams: &Seams<H, K, C>,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        let url = format!("{}{}", self.url, path);
        let oauth = matches!(self.auth, WorkspaceAuth::OAuthM2M { .. });
        let mut refreshed = false;
        loop {
            let token = self.bearer(seams, refreshed).await?;
            let build = || protocol::api_request(method.clone(), &url, &token, body);
            let response = self.send(seams, build, what).await?;
            let status = response.status().as_u16();
            let expiring = status == 403
                && String::from_utf8_lossy(response.body()).contains("Token is expiring");
            if oauth && !refreshed && (status == 401 || expiring) {
                log::info(&format!(
                    "{what}: workspace token rejected ({status}), fetching a new one"
                ));
                self.token.forget_all(&seams.cache, &seams.kv()).await;
                refreshed = true;
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(self.status_error(&response, what));
            }
            return Ok(response.into_body());
        }
    }

    /// Sends a request, retrying 429/502/503/504 and network errors within the policy.
    async fn send<H: Http, K: Kv, C: Clock>(
        &self,
        seams: &Seams<H, K, C>,
        build: impl Fn() -> HttpRequest,
        what: &str,
    ) -> Result<HttpResponse, Error> {
        let attempt = || async {
            let sent = within(&seams.clock, HTTP_TIMEOUT, seams.http.send(build()))
                .await
                .unwrap_or_else(|| {
                    Err(HostError::new(
                        HostFailure::Timeout,
                        format!("no answer within {} s", HTTP_TIMEOUT.as_secs()),
                    ))
                });
            match sent {
                Ok(response) if response.body().len() > MAX_BODY => Attempt::Done(Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "databricks sent an answer of over {} KB to {what}",
                        MAX_BODY / 1024
                    ),
                ))),
                Ok(response) if is_retryable_status(response.status().as_u16()) => Attempt::Again {
                    hint: retry_after(response.headers()),
                    failure: format!(
                        "databricks answered {} to {what} ({})",
                        response.status(),
                        self.server_message(response.body())
                    ),
                },
                Ok(response) => Attempt::Done(Ok(response)),
                Err(e) => {
                    let fix = transport_configuration_error(&e);
                    let e = log::cap(&self.scrub(&e.message));
                    if let Some(fix) = fix {
                        return Attempt::Done(Err(Error::config(
                            var::DATABRICKS_HOST,
                            format!("cannot reach {} for {what}: {fix}", self.url),
                        )
                        .with_source(Cause(e))));
                    }
                    Attempt::Again {
                        hint: None,
                        failure: format!("could not reach {} for {what}: {e}", self.url),
                    }
                }
            }
        };
        retry::run(&seams.clock, &seams.workspace_retry(), attempt)
            .await
            .map_err(|stop| match stop {
                Stop::Fatal(e) => e,
                Stop::GaveUp {
                    failure,
                    attempts,
                    elapsed,
                } => Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{failure}; gave up after {attempts} attempts over {:.1}s",
                        elapsed.as_secs_f64()
                    ),
                ),
            })
    }

    /// The error for a non-2xx answer that is not retried (or no longer).
    fn status_error(&self, response: &HttpResponse, what: &str) -> Error {
        protocol::status_error(
            response.status().as_u16(),
            &self.server_message(response.body()),
            what,
            &self.auth,
            &self.target,
            &self.url,
        )
    }

    /// A short, secret-free summary of an error body: `CODE: message`, OAuth `error: description`,
    /// the text, or what kind of body it was; at most [`log::CAP`] characters, secrets scrubbed.
    fn server_message(&self, body: &[u8]) -> String {
        log::cap(&self.scrub(&protocol::error_summary(body)))
    }

    /// `text` without any secret in hand, raw or encoded: the client secret or PAT, the
    /// OAuth workspace token in memory, the Basic credentials (base64 and percent-encoded).
    fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<Secret> = Vec::new();
        match &self.auth {
            WorkspaceAuth::Pat(t) => secrets.push(t.clone()),
            WorkspaceAuth::OAuthM2M {
                client_id,
                client_secret,
            } => {
                secrets.push(client_secret.clone());
                secrets.push(Secret::new(basic_credentials(client_id, client_secret)));
                secrets.push(Secret::new(
                    percent_encoding::utf8_percent_encode(
                        client_secret.expose(),
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .to_string(),
                ));
            }
        }
        if let Some(t) = self.token.in_memory() {
            secrets.push(t.token);
        }
        scrub(text, &secrets.iter().collect::<Vec<_>>())
    }
}

impl std::fmt::Debug for WorkspaceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceClient")
            .field("url", &self.url)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn unreadable(what: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("databricks sent an unreadable answer to {what}"),
    )
}

/// `base64(client_id:client_secret)`, the OAuth Basic credentials.
fn basic_credentials(client_id: &str, client_secret: &Secret) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{client_id}:{}", client_secret.expose()))
}
