//! Configuration from named variables, validated once; every error names the variable to fix.

use std::fmt;

use crate::error::Error;
use crate::host::Vars;
use crate::secret::Secret;

/// The Spin variable names. They are the public interface of the app and the plugin.
pub(crate) mod var {
    /// Workspace URL; a bare host gets `https://`.
    pub const DATABRICKS_HOST: &str = "databricks_host";
    /// Service principal client id (OAuth M2M).
    pub const DATABRICKS_CLIENT_ID: &str = "databricks_client_id";
    /// Service principal secret (OAuth M2M).
    pub const DATABRICKS_CLIENT_SECRET: &str = "databricks_client_secret";
    /// Personal access token.
    pub const DATABRICKS_TOKEN: &str = "databricks_token";
    /// Autoscaling endpoint `projects/<p>/branches/<b>/endpoints/<e>`.
    pub const LAKEBASE_ENDPOINT: &str = "lakebase_endpoint";
    /// Provisioned instance name.
    pub const LAKEBASE_INSTANCE: &str = "lakebase_instance";
    /// Postgres host; looked up through the API when empty.
    pub const PGHOST: &str = "pghost";
    /// Postgres port.
    pub const PGPORT: &str = "pgport";
    /// Database name.
    pub const PGDATABASE: &str = "pgdatabase";
    /// `require` (default), `prefer` or `disable`.
    pub const PGSSLMODE: &str = "pgsslmode";
    /// Postgres role.
    pub const PGUSER: &str = "pguser";
    /// PEM of a custom CA for the database's TLS.
    pub const LAKEBASE_CA_ROOT: &str = "lakebase_ca_root";
    /// Idle database sessions are closed by the server after this many seconds
    /// (`idle_session_timeout`); `0` sends no such setting. Default: from the credential.
    pub const LAKEBASE_IDLE_SESSION_TIMEOUT: &str = "lakebase_idle_session_timeout";

    /// Every name, in the order of the configuration table.
    pub const ALL: [&str; 13] = [
        DATABRICKS_HOST,
        DATABRICKS_CLIENT_ID,
        DATABRICKS_CLIENT_SECRET,
        DATABRICKS_TOKEN,
        LAKEBASE_ENDPOINT,
        LAKEBASE_INSTANCE,
        PGHOST,
        PGPORT,
        PGDATABASE,
        PGSSLMODE,
        PGUSER,
        LAKEBASE_CA_ROOT,
        LAKEBASE_IDLE_SESSION_TIMEOUT,
    ];
}

/// How the app proves itself to the workspace.
#[derive(Clone, PartialEq, Eq)]
pub enum WorkspaceAuth {
    /// OAuth machine-to-machine with a service principal.
    OAuthM2M {
        /// The application (client) id; also the Postgres role by default.
        client_id: String,
        /// The OAuth secret.
        client_secret: Secret,
    },
    /// A personal access token.
    Pat(Secret),
}

impl fmt::Debug for WorkspaceAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkspaceAuth::OAuthM2M { client_id, .. } => f
                .debug_struct("OAuthM2M")
                .field("client_id", client_id)
                .field("client_secret", &"Some(_)")
                .finish(),
            WorkspaceAuth::Pat(_) => f.write_str("Pat(Some(_))"),
        }
    }
}

/// Which Lakebase database the credential is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Lakebase Autoscaling endpoint, `projects/<p>/branches/<b>/endpoints/<e>`.
    Endpoint(String),
    /// Lakebase Provisioned instance name.
    Instance(String),
}

impl Target {
    /// The endpoint path or the instance name.
    pub fn name(&self) -> &str {
        match self {
            Target::Endpoint(n) | Target::Instance(n) => n,
        }
    }

    /// The variable the user set to choose it.
    pub fn variable(&self) -> &'static str {
        match self {
            Target::Endpoint(_) => var::LAKEBASE_ENDPOINT,
            Target::Instance(_) => var::LAKEBASE_INSTANCE,
        }
    }
}

/// TLS mode of the database connection (`pgsslmode`).
///
/// Our hosts verify the server's certificate and host name in every TLS mode (Spin's
/// `spin:postgres`, and the WASI adapter's rustls), and both parse connection strings with
/// tokio-postgres, which knows no `verify-full`: strings for them say `require`
/// ([`SslMode::for_host`]). libpq, psycopg, pgx and node-postgres verify only with
/// `verify-full`: strings handed to code we do not control say that ([`SslMode::for_clients`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// TLS required, certificate and host name verified (by our hosts). Use this against Lakebase.
    Require,
    /// The same as [`SslMode::Require`] on our hosts; the name libpq-family clients verify by.
    VerifyFull,
    /// TLS when the server offers it.
    Prefer,
    /// No TLS: local test servers only, never Lakebase (the token would travel in clear).
    Disable,
}

impl SslMode {
    /// The connection-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
            SslMode::Prefer => "prefer",
            SslMode::Disable => "disable",
        }
    }

    /// The mode for a connection string our host opens: `verify-full` is written `require`
    /// (the host verifies in every TLS mode; its parser, tokio-postgres, refuses `verify-full`).
    pub fn for_host(self) -> SslMode {
        match self {
            SslMode::VerifyFull => SslMode::Require,
            other => other,
        }
    }

    /// The mode for a connection string given to code we do not control: TLS is `verify-full`,
    /// so that a libpq-family client verifies the certificate as our hosts do.
    pub fn for_clients(self) -> SslMode {
        match self {
            SslMode::Require => SslMode::VerifyFull,
            other => other,
        }
    }

    /// Whether the connection must use TLS.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyFull)
    }
}

/// The validated configuration: from the host's variables ([`Config::load`]) or built in code
/// ([`Config::builder`]). `Debug` shows whether a secret is set, never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Workspace base URL, e.g. `https://adb-1.cloud.databricks.com` (no trailing `/`).
    pub(crate) workspace: String,
    /// Workspace authentication.
    pub(crate) auth: WorkspaceAuth,
    /// Endpoint or instance.
    pub(crate) target: Target,
    /// Postgres host, or `None` to look it up through the API.
    pub(crate) pghost: Option<String>,
    /// Postgres port.
    pub(crate) pgport: u16,
    /// Database name.
    pub(crate) pgdatabase: String,
    /// TLS mode.
    pub(crate) sslmode: SslMode,
    /// Postgres role, or `None` for the client id / SCIM user name.
    pub(crate) pguser: Option<String>,
    /// PEM of a custom CA root for the database TLS.
    pub(crate) ca_root: Option<String>,
    /// The sessions' `idle_session_timeout`: derived from each credential, a fixed one, or none.
    pub(crate) idle_session: IdleSession,
}

/// How long the server lets a database session idle before closing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdleSession {
    /// A ninth of the credential's reuse window, between 1 s and 5 minutes (the default).
    FromCredential,
    /// This many seconds.
    Seconds(u32),
    /// Not sent (`lakebase_idle_session_timeout = 0`): for a server or proxy that refuses it.
    Off,
}

/// Default Postgres port.
pub const DEFAULT_PGPORT: u16 = 5432;
/// Default Lakebase database.
pub const DEFAULT_PGDATABASE: &str = "databricks_postgres";

impl Config {
    /// A builder taking the values of the variables (see the README's configuration table),
    /// one method per variable or [`ConfigBuilder::set`] by name, validated by
    /// [`ConfigBuilder::build`] exactly as [`Config::load`] validates them.
    ///
    /// ```
    /// let config = lakebase::Config::builder()
    ///     .databricks_host("adb-1234.5.azuredatabricks.net")
    ///     .client_credentials("00000000-0000-0000-0000-000000000000", "dose-secret")
    ///     .lakebase_endpoint("projects/p/branches/b/endpoints/e")
    ///     .build()?;
    /// assert_eq!(config.workspace_url(), "https://adb-1234.5.azuredatabricks.net");
    /// # Ok::<(), lakebase::Error>(())
    /// ```
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The workspace URL, normalised (`https://…`, no trailing `/`).
    pub fn workspace_url(&self) -> &str {
        &self.workspace
    }

    /// The Autoscaling endpoint or Provisioned instance.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The TLS mode of database connections.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// Reads and validates every variable.
    pub async fn load(vars: &impl Vars) -> Result<Config, Error> {
        let mut raw = ConfigBuilder::default();
        for name in var::ALL {
            let value = vars
                .get(name)
                .await
                .map_err(|e| Error::config(name, format!("cannot read variable `{name}`: {e}")))?;
            if let Some(value) = value {
                raw = raw.set(name, value);
            }
        }
        raw.validate()
    }
}

/// Variable values before validation (`None` = unset or empty): [`Config::builder`].
#[derive(Default)]
pub struct ConfigBuilder {
    pub(crate) host: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) pghost: Option<String>,
    pub(crate) pgport: Option<String>,
    pub(crate) pgdatabase: Option<String>,
    pub(crate) pgsslmode: Option<String>,
    pub(crate) pguser: Option<String>,
    pub(crate) ca_root: Option<String>,
    pub(crate) idle_session_timeout: Option<String>,
    /// A name given to [`ConfigBuilder::set`] that is not a variable.
    pub(crate) unknown: Option<String>,
}

impl std::fmt::Debug for ConfigBuilder {
    /// Which variables are set, never their values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: Vec<&str> = var::ALL
            .iter()
            .zip(self.slots_ref())
            .filter(|(_, v)| v.is_some())
            .map(|(name, _)| *name)
            .collect();
        f.debug_struct("ConfigBuilder").field("set", &set).finish()
    }
}

/// One method per variable: `ConfigBuilder::pgport("5432")` is `set("pgport", "5432")`.
macro_rules! variable_setters {
    ($($method:ident => $name:ident;)*) => {
        impl ConfigBuilder {
    /// An OAuth M2M service principal: `databricks_client_id` and `databricks_client_secret`.
    pub fn client_credentials(
        self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.databricks_client_id(client_id)
            .databricks_client_secret(client_secret)
    }

            $(
                #[doc = concat!("Sets `", stringify!($method), "` (see [`ConfigBuilder::set`]).")]
                pub fn $method(self, value: impl Into<String>) -> Self {
                    self.set(var::$name, value)
                }
            )*
        }
    };
}

variable_setters! {
    databricks_host => DATABRICKS_HOST;
    databricks_client_id => DATABRICKS_CLIENT_ID;
    databricks_client_secret => DATABRICKS_CLIENT_SECRET;
    databricks_token => DATABRICKS_TOKEN;
    lakebase_endpoint => LAKEBASE_ENDPOINT;
    lakebase_instance => LAKEBASE_INSTANCE;
    pghost => PGHOST;
    pgport => PGPORT;
    pgdatabase => PGDATABASE;
    pgsslmode => PGSSLMODE;
    pguser => PGUSER;
    lakebase_ca_root => LAKEBASE_CA_ROOT;
    lakebase_idle_session_timeout => LAKEBASE_IDLE_SESSION_TIMEOUT;
}

impl ConfigBuilder {
    /// Sets the variable `name` (a name of the configuration table, e.g. `databricks_host`) to
    /// `value`; surrounding space is trimmed and an empty value counts as unset. An unknown name
    /// is reported by [`ConfigBuilder::build`].
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        match self.slot(name) {
            Some(slot) => *slot = value,
            None => self.unknown = Some(name.to_owned()),
        }
        self
    }

    /// Validates the values into a [`Config`]; the error names the variable to fix.
    pub fn build(self) -> Result<Config, Error> {
        self.validate()
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            var::DATABRICKS_HOST => &mut self.host,
            var::DATABRICKS_CLIENT_ID => &mut self.client_id,
            var::DATABRICKS_CLIENT_SECRET => &mut self.client_secret,
            var::DATABRICKS_TOKEN => &mut self.token,
            var::LAKEBASE_ENDPOINT => &mut self.endpoint,
            var::LAKEBASE_INSTANCE => &mut self.instance,
            var::PGHOST => &mut self.pghost,
            var::PGPORT => &mut self.pgport,
            var::PGDATABASE => &mut self.pgdatabase,
            var::PGSSLMODE => &mut self.pgsslmode,
            var::PGUSER => &mut self.pguser,
            var::LAKEBASE_CA_ROOT => &mut self.ca_root,
            var::LAKEBASE_IDLE_SESSION_TIMEOUT => &mut self.idle_session_timeout,
            _ => return None,
        })
    }

    /// The values in the order of [`var::ALL`].
    fn slots_ref(&self) -> [&Option<String>; 13] {
        [
            &self.host,
            &self.client_id,
            &self.client_secret,
            &self.token,
            &self.endpoint,
            &self.instance,
            &self.pghost,
            &self.pgport,
            &self.pgdatabase,
            &self.pgsslmode,
            &self.pguser,
            &self.ca_root,
            &self.idle_session_timeout,
        ]
    }

    fn is_empty(&self) -> bool {
        self.slots_ref().iter().all(|v| v.is_none())
    }

    pub(crate) fn validate(self) -> Result<Config, Error> {
        if let Some(name) = &self.unknown {
            return Err(Error::new(
                crate::error::ErrorKind::Configuration,
                format!(
                    "`{name}` is not a Lakebase variable: use the names of the configuration table ({})",
                    var::ALL.join(", ")
                ),
            ));
        }
        if self.is_empty() {
            // Spin answers every variable read of a component dependency that was not given
            // the parent's configuration as missing: say that, not only "set databricks_host".
            return Err(Error::config(
                var::DATABRICKS_HOST,
                "variable `databricks_host` is required, and no Lakebase variable has a value at all: set them on the component (see the configuration table); if this runs as a component dependency (the plugin), it was not given its parent's configuration: add `dependencies_inherit_configuration = true` to the component in spin.toml (every Spin), or `inherit_configuration = true` to the dependency (Spin 4.0 and later)",
            ));
        }
        let host = self.host.ok_or_else(|| {
            Error::config(
                var::DATABRICKS_HOST,
                "variable `databricks_host` is required: set it to the workspace URL, e.g. https://adb-1234.5.azuredatabricks.net",
            )
        })?;
        let workspace = normalize_workspace_url(&host)?;

        let auth = match (self.client_id, self.client_secret, self.token) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(Error::config(
                    var::DATABRICKS_TOKEN,
                    "set either `databricks_client_id` + `databricks_client_secret` (OAuth M2M) or `databricks_token` (personal access token), not both",
                ));
            }
            (Some(client_id), Some(secret), None) => WorkspaceAuth::OAuthM2M {
                client_id,
                client_secret: Secret::new(secret),
            },
            (Some(_), None, None) => {
                return Err(Error::config(
                    var::DATABRICKS_CLIENT_SECRET,
                    "variable `databricks_client_secret` is required when `databricks_client_id` is set",
                ));
            }
            (None, Some(_), None) => {
                return Err(Error::config(
                    var::DATABRICKS_CLIENT_ID,
                    "variable `databricks_client_id` is required when `databricks_client_secret` is set",
                ));
            }
            (None, None, Some(token)) => WorkspaceAuth::Pat(Secret::new(token)),
            (None, None, None) => {
                return Err(Error::config(
                    var::DATABRICKS_CLIENT_ID,
                    "no workspace credentials: set `databricks_client_id` and `databricks_client_secret` (OAuth M2M) or `databricks_token` (personal access token)",
                ));
            }
        };

        let target = match (self.endpoint, self.instance) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    var::LAKEBASE_INSTANCE,
                    "set either `lakebase_endpoint` (Autoscaling) or `lakebase_instance` (Provisioned), not both",
                ));
            }
            (Some(endpoint), None) => Target::Endpoint(validate_endpoint(&endpoint)?),
            (None, Some(instance)) => {
                if !is_resource_id(&instance) {
                    return Err(Error::config(
                        var::LAKEBASE_INSTANCE,
                        "variable `lakebase_instance` must be a Provisioned instance name: letters, digits, `-` or `_` (at most 63)",
                    ));
                }
                Target::Instance(instance)
            }
            (None, None) => {
                return Err(Error::config(
                    var::LAKEBASE_ENDPOINT,
                    "variable `lakebase_endpoint` is required (projects/<project>/branches/<branch>/endpoints/<endpoint>), or `lakebase_instance` for a Provisioned instance",
                ));
            }
        };

        let pgport = match self.pgport {
            None => DEFAULT_PGPORT,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(Error::config(
                        var::PGPORT,
                        "variable `pgport` must be a port number from 1 to 65535",
                    ));
                }
            },
        };

        let sslmode = match self.pgsslmode.as_deref() {
            None | Some("require") => SslMode::Require,
            Some("verify-full") => SslMode::VerifyFull,
            Some("prefer") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some(_) => {
                // The value is not echoed: a misplaced secret must not reach a log.
                return Err(Error::config(
                    var::PGSSLMODE,
                    "variable `pgsslmode` must be `require`, `verify-full`, `prefer` or `disable` (our hosts verify the certificate in every TLS mode)",
                ));
            }
        };

        if let Some(h) = &self.pghost
            && !is_plain_host(h)
        {
            return Err(Error::config(
                var::PGHOST,
                "variable `pghost` must be one host name or IP address, without scheme, port, path, user or `,`",
            ));
        }
        // Token auth sends the token as a plaintext password: without TLS (`disable`), or with
        // TLS that anyone on the path can refuse (`prefer`), it crosses the network in clear.
        let db_host_is_local = self.pghost.as_deref().is_some_and(is_loopback);
        if !sslmode.requires_tls() && !db_host_is_local {
            return Err(Error::config(
                var::PGSSLMODE,
                format!(
                    "variable `pgsslmode` is `{}`, which is allowed only when `pghost` is a loopback address (127.0.0.1, ::1, localhost): the token is the password, and without TLS, or with `prefer` (anyone on the path can answer \"no TLS\"), it would cross the network in clear; use `require`",
                    sslmode.as_str()
                ),
            ));
        }

        if let Some(pem) = &self.ca_root
            && parse_pem_certificates(pem).is_none()
        {
            return Err(Error::config(
                var::LAKEBASE_CA_ROOT,
                "variable `lakebase_ca_root` must hold one or more PEM certificates (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----, base64 of DER)",
            ));
        }

        let idle_session = match self.idle_session_timeout.as_deref() {
            None => IdleSession::FromCredential,
            Some("0") => IdleSession::Off,
            Some(v) => match v.parse::<u32>() {
                // PostgreSQL takes at most 2^31 - 1 milliseconds.
                Ok(secs) if secs <= 2_147_483 => IdleSession::Seconds(secs),
                _ => {
                    return Err(Error::config(
                        var::LAKEBASE_IDLE_SESSION_TIMEOUT,
                        "variable `lakebase_idle_session_timeout` must be a number of seconds from 0 to 2147483 (0: do not send `idle_session_timeout`)",
                    ));
                }
            },
        };

        Ok(Config {
            workspace,
            auth,
            target,
            pghost: self.pghost,
            pgport,
            pgdatabase: self
                .pgdatabase
                .unwrap_or_else(|| DEFAULT_PGDATABASE.to_owned()),
            sslmode,
            pguser: self.pguser,
            ca_root: self.ca_root,
            idle_session,
        })
    }
}

/// `adb-1.cloud.databricks.com` → `https://adb-1.cloud.databricks.com`; drops a trailing `/` and
/// `:443`. Plain `http://` is accepted only for loopback hosts (local emulators): a client secret
/// must not cross a network in clear.
pub fn normalize_workspace_url(input: &str) -> Result<String, Error> {
    let bad = |why: &str| {
        Error::config(
            var::DATABRICKS_HOST,
            format!(
                "variable `databricks_host` is not a workspace URL ({why}): expected e.g. https://adb-1234.5.azuredatabricks.net"
            ),
        )
    };
    let with_scheme = if input.contains("://") {
        input.to_owned()
    } else {
        format!("https://{input}")
    };
    // `http::Uri` (already a dependency) rather than a WHATWG URL parser: a workspace URL is a
    // scheme and a plain host, and the IDNA tables such a parser carries would cost every
    // `.wasm` about 125 KB. A host that is not plain ASCII is refused.
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("it must not contain a user or password"));
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    if path.contains('?') {
        return Err(bad("it must not have a query"));
    }
    if path != "/" && !path.is_empty() {
        return Err(bad("it must not have a path"));
    }
    if authority.port().is_some() && authority.port_u16().is_none() {
        return Err(bad("the port is not a number"));
    }
    let host = authority.host().to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let literal_v6 = host.starts_with('[') && bare.parse::<std::net::Ipv6Addr>().is_ok();
    if !(literal_v6 || (!host.starts_with('[') && is_plain_host(&host))) {
        return Err(bad("the host must be a DNS name or an IP address"));
    }
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    match scheme.as_str() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(bad("plain http is allowed only for a loopback host")),
        other => return Err(bad(&format!("unsupported scheme `{other}`"))),
    }
    // The scheme's default port (443 for https, 80 for http) is dropped.
    let mut out = format!("{scheme}://{host}");
    match (scheme.as_str(), authority.port_u16()) {
        ("https", Some(443)) | ("http", Some(80)) | (_, None) => {}
        (_, Some(port)) => out.push_str(&format!(":{port}")),
    }
    Ok(out)
}

/// A DNS host name (letters, digits, `-` and `.`, labels of 1–63 characters, 253 in all) or an
/// IP address literal: nothing a connection string or URL could read as more than one host.
pub(crate) fn is_plain_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Whether `host` is this machine: `localhost`, 127.0.0.0/8 or ::1.
pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One segment of a resource name: 1–63 of `A–Z a–z 0–9 - _`.
fn is_resource_id(segment: &str) -> bool {
    (1..=63).contains(&segment.len())
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn validate_endpoint(endpoint: &str) -> Result<String, Error> {
    let parts: Vec<&str> = endpoint.trim_matches('/').split('/').collect();
    let ok = parts.len() == 6
        && parts[0] == "projects"
        && parts[2] == "branches"
        && parts[4] == "endpoints"
        && [parts[1], parts[3], parts[5]]
            .iter()
            .all(|p| is_resource_id(p));
    if ok {
        Ok(parts.join("/"))
    } else {
        // The value is not echoed: it may hold anything, control characters included.
        Err(Error::config(
            var::LAKEBASE_ENDPOINT,
            "variable `lakebase_endpoint` must look like projects/<project>/branches/<branch>/endpoints/<endpoint>, each id made of letters, digits, `-` or `_` (at most 63)",
        ))
    }
}

/// The certificates of a PEM text, each checked to be base64 of a DER SEQUENCE whose length
/// matches; `None` if there is none or one is malformed.
pub(crate) fn parse_pem_certificates(pem: &str) -> Option<Vec<Vec<u8>>> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after.find(END)?;
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?;
        if !is_der_sequence(&der) {
            return None;
        }
        certs.push(der);
        rest = &after[end + END.len()..];
    }
    (!certs.is_empty()).then_some(certs)
}

/// A DER SEQUENCE (tag 0x30) whose definite length covers exactly the rest of `der`.
fn is_der_sequence(der: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = der else {
        return false;
    };
    let (len, body) = if *first < 0x80 {
        (*first as usize, rest)
    } else {
        let n = (*first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return false;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    len == body.len() && len > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn raw() -> ConfigBuilder {
        ConfigBuilder {
            host: Some("adb-1.cloud.databricks.com".into()),
            client_id: Some("6f1c2a3e-0000-4000-8000-000000000001".into()),
            client_secret: Some("dose-very-secret".into()),
            endpoint: Some("projects/p/branches/b/endpoints/e".into()),
            ..ConfigBuilder::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let c = raw().validate().unwrap();
        assert_eq!(c.workspace, "https://adb-1.cloud.databricks.com");
        assert_eq!(c.pgport, 5432);
        assert_eq!(c.pgdatabase, "databricks_postgres");
        assert_eq!(c.sslmode, SslMode::Require);
        assert_eq!(c.pghost, None);
        assert_eq!(
            c.target,
            Target::Endpoint("projects/p/branches/b/endpoints/e".into())
        );
    }

    #[test]
    fn workspace_urls_are_normalized() {
        for (input, want) in [
            (
                "adb-1.cloud.databricks.com",
                "https://adb-1.cloud.databricks.com",
            ),
            (
                "https://adb-1.cloud.databricks.com/",
                "https://adb-1.cloud.databricks.com",
            ),
            (
                "https://adb-1.cloud.databricks.com:443",
                "https://adb-1.cloud.databricks.com",
            ),
            (
                "adb-1.cloud.databricks.com:8443",
                "https://adb-1.cloud.databricks.com:8443",
            ),
            ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
            ("http://localhost:8787/", "http://localhost:8787"),
            (
                "HTTPS://ADB-1.Cloud.Databricks.com",
                "https://adb-1.cloud.databricks.com",
            ),
            ("http://[::1]:8787", "http://[::1]:8787"),
            ("http://localhost:80", "http://localhost"),
        ] {
            assert_eq!(normalize_workspace_url(input).unwrap(), want, "{input}");
        }
        for bad in [
            "http://adb-1.cloud.databricks.com",
            "ftp://x",
            "https://x/path",
            "https://user:pw@x",
            "https://",
            "https://x?q=1",
            "https://ex\u{e4}mple.com",
            "https://a b.com",
            "https://[not-an-ip]",
        ] {
            let e = normalize_workspace_url(bad).unwrap_err();
            assert_eq!(e.variable(), Some("databricks_host"), "{bad}");
            assert!(e.message().contains("databricks_host"));
        }
    }

    #[test]
    fn every_error_names_its_variable() {
        let cases: Vec<(ConfigBuilder, &str)> = vec![
            (
                ConfigBuilder {
                    host: None,
                    ..raw()
                },
                "databricks_host",
            ),
            (
                ConfigBuilder {
                    client_secret: None,
                    ..raw()
                },
                "databricks_client_secret",
            ),
            (
                ConfigBuilder {
                    client_id: None,
                    ..raw()
                },
                "databricks_client_id",
            ),
            (
                ConfigBuilder {
                    client_id: None,
                    client_secret: None,
                    ..raw()
                },
                "databricks_client_id",
            ),
            (
                ConfigBuilder {
                    token: Some("dapi1".into()),
                    ..raw()
                },
                "databricks_token",
            ),
            (
                ConfigBuilder {
                    endpoint: None,
                    ..raw()
                },
                "lakebase_endpoint",
            ),
            (
                ConfigBuilder {
                    instance: Some("i".into()),
                    ..raw()
                },
                "lakebase_instance",
            ),
            (
                ConfigBuilder {
                    endpoint: Some("projects/p/endpoints/e".into()),
                    ..raw()
                },
                "lakebase_endpoint",
            ),
            (
                ConfigBuilder {
                    pgport: Some("0".into()),
                    ..raw()
                },
                "pgport",
            ),
            (
                ConfigBuilder {
                    pgport: Some("54x".into()),
                    ..raw()
                },
                "pgport",
            ),
            (
                ConfigBuilder {
                    pgsslmode: Some("verify-ca".into()),
                    ..raw()
                },
                "pgsslmode",
            ),
            (
                ConfigBuilder {
                    pghost: Some("postgres://h".into()),
                    ..raw()
                },
                "pghost",
            ),
            (
                ConfigBuilder {
                    ca_root: Some("not a pem".into()),
                    ..raw()
                },
                "lakebase_ca_root",
            ),
        ];
        for (c, name) in cases {
            let e = c.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Configuration);
            assert_eq!(e.variable(), Some(name), "{e}");
            assert!(e.message().contains(&format!("`{name}`")), "{e}");
        }
    }

    #[test]
    fn pat_and_instance() {
        let c = ConfigBuilder {
            client_id: None,
            client_secret: None,
            token: Some("dapi123".into()),
            endpoint: None,
            instance: Some("my-instance".into()),
            pghost: Some("127.0.0.1".into()),
            pgsslmode: Some("disable".into()),
            ..raw()
        }
        .validate()
        .unwrap();
        assert!(matches!(c.auth, WorkspaceAuth::Pat(_)));
        assert_eq!(c.target, Target::Instance("my-instance".into()));
        assert_eq!(c.sslmode, SslMode::Disable);
    }

    #[test]
    fn plaintext_modes_only_toward_loopback() {
        for mode in ["prefer", "disable"] {
            for host in [
                None,
                Some("ep-1.database.cloud.databricks.com"),
                Some("10.0.0.5"),
            ] {
                let e = ConfigBuilder {
                    pghost: host.map(str::to_owned),
                    pgsslmode: Some(mode.into()),
                    ..raw()
                }
                .validate()
                .unwrap_err();
                assert_eq!(e.variable(), Some("pgsslmode"), "{e}");
                assert!(e.message().contains("loopback"), "{e}");
            }
            for host in ["127.0.0.1", "127.0.0.2", "::1", "localhost"] {
                let c = ConfigBuilder {
                    pghost: Some(host.into()),
                    pgsslmode: Some(mode.into()),
                    ..raw()
                }
                .validate();
                assert!(c.is_ok(), "{mode} toward {host}");
            }
        }
    }

    #[test]
    fn names_follow_their_grammar() {
        for bad in [
            "projects/p?x/branches/b/endpoints/e",
            "projects/p#/branches/b/endpoints/e",
            "projects/p\u{7}/branches/b/endpoints/e",
            "projects/p/branches/b/endpoints/e\n",
            "projects/p/branches/b/endpoints/e/extra",
            "projects//branches/b/endpoints/e",
        ] {
            let e = ConfigBuilder {
                endpoint: Some(bad.into()),
                ..raw()
            }
            .validate()
            .unwrap_err();
            assert_eq!(e.variable(), Some("lakebase_endpoint"));
            assert!(!e.message().contains(bad), "not echoed: {e}");
        }
        for bad in ["a/b", "a b", "a?b", "a\u{0}b", ""] {
            let raw = ConfigBuilder {
                endpoint: None,
                instance: Some(bad.into()),
                ..raw()
            };
            if bad.is_empty() {
                continue;
            }
            assert_eq!(
                raw.validate().unwrap_err().variable(),
                Some("lakebase_instance"),
                "{bad:?}"
            );
        }
        for bad in ["h1,h2", "h:5432", "user@h", "h/db", "-h", "h..x", "a b"] {
            let e = ConfigBuilder {
                pghost: Some(bad.into()),
                ..raw()
            }
            .validate()
            .unwrap_err();
            assert_eq!(e.variable(), Some("pghost"), "{bad}");
        }
        for good in [
            "ep-1.database.us-east-1.cloud.databricks.com",
            "10.1.2.3",
            "::1",
            "db.",
        ] {
            assert!(is_plain_host(good), "{good}");
        }
    }

    #[test]
    fn ca_root_must_parse_as_certificates() {
        let der_b64 = |der: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(der)
        };
        let pem = |body: &str| {
            format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
        };
        let good = pem(&der_b64(&[0x30, 0x03, 0x02, 0x01, 0x05]));
        assert_eq!(parse_pem_certificates(&good).map(|c| c.len()), Some(1));
        assert_eq!(
            parse_pem_certificates(&format!("{good}{good}")).map(|c| c.len()),
            Some(2)
        );
        for bad in [
            "-----BEGIN CERTIFICATE-----".to_owned(),
            pem("not base64!"),
            pem(&der_b64(&[0x31, 0x01, 0x00])),
            pem(&der_b64(&[0x30, 0x05, 0x00])),
            "no pem at all".to_owned(),
        ] {
            assert!(parse_pem_certificates(&bad).is_none(), "{bad}");
            let e = ConfigBuilder {
                ca_root: Some(bad),
                ..raw()
            }
            .validate()
            .unwrap_err();
            assert_eq!(e.variable(), Some("lakebase_ca_root"));
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c = raw().validate().unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("dose-very-secret"), "{text}");
        assert!(text.contains("client_secret"));
    }
}
