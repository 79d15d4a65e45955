//! The Databricks workspace REST API: the workspace token, the database credential, look-ups.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use http::Method;

use crate::cache;
use crate::config::{Target, WorkspaceAuth, var};
use crate::credential::ASSUMED_LIFETIME;
use crate::deadline::{HTTP_TIMEOUT, MAX_BODY, within};
use crate::error::{Cause, Error, ErrorKind};
use crate::host::{Clock, Http, HttpRequest, HttpResponse, Kv};
use crate::lakebase::Lakebase;
use crate::log;
use crate::protocol;
use crate::retry::{is_retryable_status, retry_after, transport_configuration_error};
use crate::secret::{Secret, scrub};

/// An OAuth workspace token is dropped this long before its `expires_in` (at least 40 s are
/// needed: Databricks answers "Token is expiring within 30 seconds" before that).
pub const WORKSPACE_TOKEN_MARGIN: TimeDelta = TimeDelta::seconds(60);

/// A longer `expires_in` is taken as this (a day).
const MAX_WORKSPACE_TOKEN_LIFETIME: i64 = 86_400;

/// Lifetime assumed when the token endpoint gives no `expires_in`.
const DEFAULT_WORKSPACE_TOKEN_LIFETIME: i64 = 3600;

/// A minted database token and the server's expiry.
pub(crate) struct Minted {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

impl<H: Http, K: Kv, C: Clock> Lakebase<H, K, C> {
    /// The workspace bearer token: the PAT, or an OAuth M2M token from memory, the key-value
    /// store, or the token endpoint. `refresh` skips both caches.
    pub(crate) async fn workspace_token(&self, refresh: bool) -> Result<Secret, Error> {
        let (client_id, client_secret) = match &self.config.auth {
            WorkspaceAuth::Pat(token) => return Ok(token.clone()),
            WorkspaceAuth::OAuthM2M {
                client_id,
                client_secret,
            } => (client_id, client_secret),
        };
        // Only the request that holds the instance's load ticket gets here, so no two fetches
        // race inside one instance; the lock is never held across an await.
        let remembered = || {
            self.workspace_token
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        let now = self.clock.now();
        if !refresh {
            if let Some((token, until)) = remembered().as_ref()
                && now < *until
            {
                return Ok(token.clone());
            }
            if let Some((token, until)) = self.cache.read_workspace_token(&self.kv()).await
                && now < until
            {
                *remembered() = Some((token.clone(), until));
                return Ok(token);
            }
        }
        let (token, until) = self.fetch_oauth_token(client_id, client_secret).await?;
        self.cache
            .write_workspace_token(&self.kv(), &token, until)
            .await;
        *remembered() = Some((token.clone(), until));
        Ok(token)
    }

    /// Forgets the OAuth workspace token (after the API rejected it).
    async fn drop_workspace_token(&self) {
        *self
            .workspace_token
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        cache::delete(
            &self.kv(),
            &self.cache.keys.workspace_token,
            "workspace token",
        )
        .await;
    }

    async fn fetch_oauth_token(
        &self,
        client_id: &str,
        client_secret: &Secret,
    ) -> Result<(Secret, DateTime<Utc>), Error> {
        let basic = basic_credentials(client_id, client_secret);
        let build = || protocol::token_request(&self.config.workspace, &basic);
        let what = "the OAuth token request";
        let response = self.send_with_retry(build, what).await?;
        let status = response.status().as_u16();
        let body = response.body();
        if status == 400 || status == 401 || status == 403 {
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
        let (token, lifetime) = protocol::parse_token(body).ok_or_else(|| self.unreadable(what))?;
        let lifetime = lifetime.unwrap_or(DEFAULT_WORKSPACE_TOKEN_LIFETIME);
        // Bounded: a hostile or broken `expires_in` neither overflows nor caches for ever.
        let usable =
            lifetime.clamp(0, MAX_WORKSPACE_TOKEN_LIFETIME) - WORKSPACE_TOKEN_MARGIN.num_seconds();
        let now = self.clock.now();
        let until = now
            .checked_add_signed(TimeDelta::seconds(usable.max(0)))
            .unwrap_or(now);
        log::info(&format!(
            "obtained an OAuth workspace token for client {client_id}"
        ));
        Ok((Secret::new(token), until))
    }

    /// Calls a workspace API with the bearer token; on 401 (or 403 "expiring") with an OAuth
    /// token, fetches a new token and tries once more.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        let url = format!("{}{}", self.config.workspace, path);
        let mut refreshed = false;
        loop {
            let token = self.workspace_token(refreshed).await?;
            let build = || protocol::api_request(method.clone(), &url, &token, body);
            let response = self.send_with_retry(build, what).await?;
            let status = response.status().as_u16();
            let oauth = matches!(self.config.auth, WorkspaceAuth::OAuthM2M { .. });
            let expiring = status == 403
                && String::from_utf8_lossy(response.body()).contains("Token is expiring");
            if oauth && !refreshed && (status == 401 || expiring) {
                log::info(&format!(
                    "{what}: workspace token rejected ({status}), fetching a new one"
                ));
                self.drop_workspace_token().await;
                refreshed = true;
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(self.status_error(&response, what));
            }
            return Ok(response.into_body());
        }
    }

    /// Mints a database credential for the configured endpoint or instance.
    pub(crate) async fn mint_token(&self) -> Result<Minted, Error> {
        let target = &self.config.target;
        let (path, body) = protocol::credential_call(target, &uuid::Uuid::new_v4().to_string());
        let what = "the database credential request";
        let answer = self.call(Method::POST, path, Some(&body), what).await?;
        let (token, expiry) =
            protocol::parse_credential(target, &answer).ok_or_else(|| self.unreadable(what))?;
        let expires_at = match expiry {
            Some(t) => t,
            None => {
                log::warn(&format!(
                    "the credential response has no readable `{}`; assuming it expires in one hour",
                    protocol::expiry_field(target)
                ));
                let now = self.clock.now();
                now.checked_add_signed(ASSUMED_LIFETIME).unwrap_or(now)
            }
        };
        Ok(Minted {
            token: Secret::new(token),
            expires_at,
        })
    }

    /// The Postgres host of the endpoint or instance.
    pub(crate) async fn lookup_host(&self) -> Result<String, Error> {
        let what = "the host look-up";
        let target = &self.config.target;
        let answer = self
            .call(Method::GET, &protocol::host_lookup_path(target), None, what)
            .await?;
        let host = protocol::parse_host(target, &answer).ok_or_else(|| self.unreadable(what))?;
        if let Some(h) = &host
            && !crate::config::is_plain_host(h)
        {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the host look-up of `{}` answered something that is not a host name: set `{}`",
                    self.config.target.name(),
                    var::PGHOST
                ),
            ));
        }
        host.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "`{}` has no host yet (is it starting?): try again, or set `{}`",
                    self.config.target.name(),
                    var::PGHOST
                ),
            )
        })
    }

    /// The calling user's name (SCIM `Me.userName`), the Postgres role of a PAT user.
    pub(crate) async fn lookup_user(&self) -> Result<String, Error> {
        let what = "the user look-up";
        let answer = self
            .call(Method::GET, protocol::ME_PATH, None, what)
            .await?;
        protocol::parse_user(&answer).ok_or_else(|| self.unreadable("the user look-up"))
    }

    /// Sends a request, retrying 429/502/503/504 and network errors within the policy.
    async fn send_with_retry(
        &self,
        build: impl Fn() -> HttpRequest,
        what: &str,
    ) -> Result<HttpResponse, Error> {
        let start = self.clock.now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sent = within(&self.clock, HTTP_TIMEOUT, self.http.send(build()))
                .await
                .unwrap_or_else(|| Err(format!("no answer within {} s", HTTP_TIMEOUT.as_secs())));
            let (hint, failure) = match sent {
                Ok(response) if response.body().len() > MAX_BODY => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "databricks sent an answer of over {} KB to {what}",
                            MAX_BODY / 1024
                        ),
                    ));
                }
                Ok(response) if is_retryable_status(response.status().as_u16()) => (
                    retry_after(response.headers()),
                    format!(
                        "databricks answered {} to {what} ({})",
                        response.status(),
                        self.server_message(response.body())
                    ),
                ),
                Ok(response) => return Ok(response),
                Err(e) => {
                    let e = log::cap(&self.scrub(&e));
                    if let Some(fix) = transport_configuration_error(&e) {
                        return Err(Error::config(
                            var::DATABRICKS_HOST,
                            format!("cannot reach {} for {what}: {fix}", self.config.workspace),
                        )
                        .with_source(Cause(e)));
                    }
                    (
                        None,
                        format!("could not reach {} for {what}: {e}", self.config.workspace),
                    )
                }
            };
            let elapsed = (self.clock.now() - start)
                .to_std()
                .unwrap_or(Duration::ZERO);
            match self.retry.next_delay(attempt, elapsed, hint) {
                Some(delay) => {
                    let delay = self.retry.jittered(delay);
                    log::info(&format!(
                        "{failure}; retrying in {:.2}s",
                        delay.as_secs_f32()
                    ));
                    self.clock.sleep(delay).await;
                }
                None => {
                    let elapsed = (self.clock.now() - start).num_milliseconds() as f64 / 1000.0;
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("{failure}; gave up after {attempt} attempts over {elapsed:.1}s"),
                    ));
                }
            }
        }
    }

    /// The error for a non-2xx answer that is not retried (or no longer).
    fn status_error(&self, response: &HttpResponse, what: &str) -> Error {
        let status = response.status();
        let message = self.server_message(response.body());
        let target = &self.config.target;
        let (kind, advice) = match status.as_u16() {
            401 => (
                ErrorKind::WorkspaceAuth,
                match self.config.auth {
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
                    "`{}` was not found in {}: check `{}`",
                    target.name(),
                    self.config.workspace,
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
        Error::new(
            kind,
            format!("{advice} (HTTP {}: {message})", status.as_u16()),
        )
        .with_source(Cause(format!("HTTP {status}")))
    }

    fn unreadable(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!("databricks sent an unreadable answer to {what}"),
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
        match &self.config.auth {
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
        if let Some((token, _)) = self
            .workspace_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            secrets.push(token.clone());
        }
        scrub(text, &secrets.iter().collect::<Vec<_>>())
    }
}

/// `base64(client_id:client_secret)`, the OAuth Basic credentials.
fn basic_credentials(client_id: &str, client_secret: &Secret) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{client_id}:{}", client_secret.expose()))
}
