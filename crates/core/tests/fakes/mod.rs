//! Fakes of the host seams for the core's tests: a manual clock, an in-memory key-value store
//! that can fail, a scripted Databricks workspace that checks every request it receives, and a
//! Postgres login that accepts only the tokens it was told about.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use lakebase::Secret;
use lakebase::host::{
    Clock, ConnectError, Connector, ConnectorNow, HostError, Http, HttpRequest, HttpResponse, Kv,
    Vars,
};
use serde_json::{Value, json};

/// Yields once to the executor, so that concurrent futures really interleave.
pub async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// A clock that moves only when told to, or when someone sleeps on it.
#[derive(Clone)]
pub struct ManualClock {
    now: Rc<Cell<DateTime<Utc>>>,
    pub sleeps: Rc<RefCell<Vec<Duration>>>,
}

impl ManualClock {
    pub fn at(rfc3339: &str) -> Self {
        ManualClock {
            now: Rc::new(Cell::new(
                DateTime::parse_from_rfc3339(rfc3339)
                    .unwrap()
                    .with_timezone(&Utc),
            )),
            sleeps: Rc::default(),
        }
    }
    pub fn advance(&self, by: TimeDelta) {
        self.now.set(self.now.get() + by);
    }
    pub fn get(&self) -> DateTime<Utc> {
        self.now.get()
    }
    /// Sleeps of a second or more (the retry waits), leaving out the short lease polls.
    pub fn long_sleeps(&self) -> Vec<Duration> {
        self.sleeps
            .borrow()
            .iter()
            .copied()
            .filter(|d| *d >= Duration::from_secs(1))
            .collect()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.get()
    }
    async fn sleep(&self, duration: Duration) {
        // A sleep takes one turn of the executor per millisecond, so that in a race (a
        // deadline) a longer sleep loses to work that takes fewer turns, as on a real host;
        // time moves when the sleep completes, so a deadline that did not fire leaves the
        // clock and the record alone.
        for _ in 0..duration.as_millis().clamp(1, 100_000) {
            yield_now().await;
        }
        self.sleeps.borrow_mut().push(duration);
        self.advance(TimeDelta::from_std(duration).unwrap());
    }
}

/// An in-memory store shared by clones (like the host's store shared by instances).
#[derive(Clone, Default)]
pub struct MemKv {
    pub data: Rc<RefCell<HashMap<String, Vec<u8>>>>,
    pub failing: Rc<Cell<bool>>,
    /// Every operation waits for ever (a Redis that is down, as Spin's client behaves).
    pub hanging: Rc<Cell<bool>>,
}

impl MemKv {
    pub fn keys_with(&self, part: &str) -> Vec<String> {
        self.data
            .borrow()
            .keys()
            .filter(|k| k.contains(part))
            .cloned()
            .collect()
    }
    pub fn dump_value(&self, key: &str) -> Vec<u8> {
        self.data.borrow().get(key).cloned().unwrap_or_default()
    }
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        self.data
            .borrow_mut()
            .insert(key.to_owned(), value.to_vec());
    }
    pub fn dump(&self) -> String {
        self.data
            .borrow()
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Kv for MemKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        yield_now().await;
        if self.hanging.get() {
            futures::future::pending::<()>().await;
        }
        if self.failing.get() {
            return Err("store unavailable (injected)".to_owned().into());
        }
        Ok(self.data.borrow().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        if self.hanging.get() {
            futures::future::pending::<()>().await;
        }
        if self.failing.get() {
            return Err("store unavailable (injected)".to_owned().into());
        }
        self.data
            .borrow_mut()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), HostError> {
        if self.hanging.get() {
            futures::future::pending::<()>().await;
        }
        if self.failing.get() {
            return Err("store unavailable (injected)".to_owned().into());
        }
        self.data.borrow_mut().remove(key);
        Ok(())
    }
}

/// Variables from a map.
#[derive(Clone, Default)]
pub struct MapVars(pub HashMap<String, String>);

impl MapVars {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        MapVars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Vars for MapVars {
    async fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        Ok(self.0.get(name).cloned())
    }
}

pub const HOST: &str = "https://adb-1.cloud.databricks.com";
pub const CLIENT_ID: &str = "6f1c2a3e-0000-4000-8000-000000000001";
pub const CLIENT_SECRET: &str = "dose0123456789secretvalue";
pub const PAT: &str = "dapi0123456789abcdefpat";
pub const PAT_USER: &str = "someone@example.com";
pub const ENDPOINT: &str = "projects/p1/branches/main/endpoints/ep1";
pub const INSTANCE: &str = "inst-1";
pub const PG_HOST: &str = "ep-1.database.us-east-1.cloud.databricks.com";

pub const TOKEN_ROUTE: &str = "POST /oidc/v1/token";
pub const AUTOSCALING_ROUTE: &str = "POST /api/2.0/postgres/credentials";
pub const PROVISIONED_ROUTE: &str = "POST /api/2.0/database/credentials";
pub const ENDPOINT_ROUTE: &str = "GET /api/2.0/postgres/projects/p1/branches/main/endpoints/ep1";
pub const INSTANCE_ROUTE: &str = "GET /api/2.0/database/instances/inst-1";
pub const ME_ROUTE: &str = "GET /api/2.0/preview/scim/v2/Me";

/// A canned answer that replaces the normal one for the next matching request.
pub enum Scripted {
    Status(u16, Option<&'static str>, String),
    Network(&'static str),
    /// Accept the request and never answer.
    Hang,
}

struct WorkspaceState {
    counts: HashMap<String, usize>,
    scripts: HashMap<String, VecDeque<Scripted>>,
    /// Workspace tokens that are currently valid.
    live_workspace_tokens: HashSet<String>,
    minted: Vec<String>,
    request_ids: HashSet<String>,
    serial: usize,
    workspace_token_lifetime: i64,
    db_token_lifetime: TimeDelta,
    fraction_digits: usize,
    /// The field the Provisioned API uses for the expiry (tests may break it on purpose).
    provisioned_expiry_field: &'static str,
}

/// A Databricks workspace that asserts the shape of every request and answers in the real
/// wire format. Panics on anything unexpected, so a wrong request fails the test loudly.
#[derive(Clone)]
pub struct FakeWorkspace {
    clock: ManualClock,
    state: Rc<RefCell<WorkspaceState>>,
}

impl FakeWorkspace {
    pub fn new(clock: &ManualClock) -> Self {
        let mut live = HashSet::new();
        live.insert(PAT.to_owned());
        FakeWorkspace {
            clock: clock.clone(),
            state: Rc::new(RefCell::new(WorkspaceState {
                counts: HashMap::new(),
                scripts: HashMap::new(),
                live_workspace_tokens: live,
                minted: Vec::new(),
                request_ids: HashSet::new(),
                serial: 0,
                workspace_token_lifetime: 3600,
                db_token_lifetime: TimeDelta::hours(1),
                fraction_digits: 0,
                provisioned_expiry_field: "expiration_time",
            })),
        }
    }
    pub fn count(&self, route: &str) -> usize {
        self.state.borrow().counts.get(route).copied().unwrap_or(0)
    }
    pub fn mints(&self) -> usize {
        self.count(AUTOSCALING_ROUTE) + self.count(PROVISIONED_ROUTE)
    }
    pub fn minted(&self) -> Vec<String> {
        self.state.borrow().minted.clone()
    }
    pub fn script(&self, route: &str, answer: Scripted) {
        self.state
            .borrow_mut()
            .scripts
            .entry(route.to_owned())
            .or_default()
            .push_back(answer);
    }
    pub fn scripts_clear(&self, route: &str) {
        self.state.borrow_mut().scripts.remove(route);
    }
    /// The OAuth workspace tokens that are valid now.
    pub fn workspace_tokens(&self) -> Vec<String> {
        self.state
            .borrow()
            .live_workspace_tokens
            .iter()
            .cloned()
            .collect()
    }
    pub fn set_workspace_token_lifetime(&self, secs: i64) {
        self.state.borrow_mut().workspace_token_lifetime = secs;
    }
    pub fn set_db_token_lifetime(&self, d: TimeDelta) {
        self.state.borrow_mut().db_token_lifetime = d;
    }
    pub fn set_fraction_digits(&self, n: usize) {
        self.state.borrow_mut().fraction_digits = n;
    }
    pub fn set_provisioned_expiry_field(&self, f: &'static str) {
        self.state.borrow_mut().provisioned_expiry_field = f;
    }
    /// Revokes every workspace token (as if they expired): the next API call gets 401.
    pub fn expire_workspace_tokens(&self) {
        self.state
            .borrow_mut()
            .live_workspace_tokens
            .retain(|t| t == PAT);
    }

    fn expiry_text(&self, at: DateTime<Utc>) -> String {
        let digits = self.state.borrow().fraction_digits;
        let base = at.format("%Y-%m-%dT%H:%M:%S").to_string();
        if digits == 0 {
            format!("{base}Z")
        } else {
            let nanos = format!("{:09}", at.timestamp_subsec_nanos());
            format!("{base}.{}Z", &nanos[..digits])
        }
    }

    fn bearer_ok(&self, req: &HttpRequest) -> bool {
        let auth = req
            .headers()
            .get("authorization")
            .expect("authorization header")
            .to_str()
            .unwrap();
        let token = auth
            .strip_prefix("Bearer ")
            .expect("bearer auth on API calls");
        assert!(
            req.headers().get("authorization").unwrap().is_sensitive(),
            "auth header must be marked sensitive"
        );
        self.state.borrow().live_workspace_tokens.contains(token)
    }

    fn answer(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        let uri: http::Uri = req.uri().clone();
        assert_eq!(
            format!(
                "{}://{}",
                uri.scheme_str().unwrap(),
                uri.authority().unwrap()
            ),
            HOST,
            "requests go to the workspace"
        );
        let route = format!("{} {}", req.method(), uri.path());
        self.state
            .borrow_mut()
            .counts
            .entry(route.clone())
            .and_modify(|c| *c += 1)
            .or_insert(1);
        let scripted = self
            .state
            .borrow_mut()
            .scripts
            .get_mut(&route)
            .and_then(VecDeque::pop_front);
        match scripted {
            Some(Scripted::Hang) => return Err(HANG.to_owned()),
            Some(Scripted::Network(why)) => return Err(why.to_owned()),
            Some(Scripted::Status(status, retry_after, body)) => {
                let mut r = http::Response::builder().status(status);
                if let Some(ra) = retry_after {
                    r = r.header("retry-after", ra);
                }
                return Ok(r.body(body.into_bytes()).unwrap());
            }
            None => {}
        }
        let json_ok = |v: Value| {
            Ok(http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(v.to_string().into_bytes())
                .unwrap())
        };
        let unauthenticated = || {
            Ok(http::Response::builder()
                .status(401)
                .body(
                    br#"{"error_code":"UNAUTHENTICATED","message":"Invalid access token."}"#
                        .to_vec(),
                )
                .unwrap())
        };
        match route.as_str() {
            TOKEN_ROUTE => {
                let auth = req.headers().get("authorization").expect("basic auth");
                assert!(auth.is_sensitive());
                let expected = base64::engine::general_purpose::STANDARD
                    .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
                assert_eq!(
                    req.headers()["content-type"],
                    "application/x-www-form-urlencoded"
                );
                let form: HashMap<String, String> = url::form_urlencoded::parse(req.body())
                    .into_owned()
                    .collect();
                assert_eq!(
                    form.get("grant_type").map(String::as_str),
                    Some("client_credentials")
                );
                assert_eq!(form.get("scope").map(String::as_str), Some("all-apis"));
                assert_eq!(form.len(), 2, "no other form fields");
                if auth.to_str().unwrap() != format!("Basic {expected}") {
                    return Ok(http::Response::builder().status(401).body(br#"{"error":"invalid_client","error_description":"Client authentication failed"}"#.to_vec()).unwrap());
                }
                let mut s = self.state.borrow_mut();
                s.serial += 1;
                let token = format!("ws-token-{}-abcdefgh", s.serial);
                s.live_workspace_tokens.insert(token.clone());
                let lifetime = s.workspace_token_lifetime;
                drop(s);
                json_ok(
                    json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime, "scope": "all-apis"}),
                )
            }
            AUTOSCALING_ROUTE | PROVISIONED_ROUTE => {
                if !self.bearer_ok(req) {
                    return unauthenticated();
                }
                assert_eq!(req.headers()["content-type"], "application/json");
                let body: Value = serde_json::from_slice(req.body()).expect("JSON body");
                let field = if route == AUTOSCALING_ROUTE {
                    assert_eq!(body, json!({"endpoint": ENDPOINT}));
                    "expire_time"
                } else {
                    assert_eq!(body["instance_names"], json!([INSTANCE]));
                    let id = body["request_id"].as_str().expect("request_id");
                    assert_eq!(id.len(), 36, "a uuid");
                    assert!(
                        self.state.borrow_mut().request_ids.insert(id.to_owned()),
                        "request_id is fresh"
                    );
                    self.state.borrow().provisioned_expiry_field
                };
                let mut s = self.state.borrow_mut();
                s.serial += 1;
                let token = format!("eyJhbGciOiJSUzI1NiJ9.db-token-{}.signature", s.serial);
                s.minted.push(token.clone());
                let expires = self.clock.get() + s.db_token_lifetime + TimeDelta::milliseconds(123);
                drop(s);
                json_ok(json!({"token": token, field: self.expiry_text(expires)}))
            }
            ENDPOINT_ROUTE => {
                if !self.bearer_ok(req) {
                    return unauthenticated();
                }
                json_ok(
                    json!({"name": ENDPOINT, "status": {"hosts": {"host": PG_HOST}, "endpoint_type": "ENDPOINT_TYPE_READ_WRITE"}}),
                )
            }
            INSTANCE_ROUTE => {
                if !self.bearer_ok(req) {
                    return unauthenticated();
                }
                json_ok(
                    json!({"name": INSTANCE, "read_write_dns": "instance-1.database.cloud.databricks.com"}),
                )
            }
            ME_ROUTE => {
                if !self.bearer_ok(req) {
                    return unauthenticated();
                }
                json_ok(json!({"userName": PAT_USER, "id": "123"}))
            }
            other => panic!("unexpected request {other}"),
        }
    }
}

impl Http for FakeWorkspace {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HostError> {
        yield_now().await;
        match self.answer(&request) {
            Err(e) if e == HANG => futures::future::pending().await,
            // Scripted transport failures are text, as from a host that gives text only.
            other => other.map_err(HostError::from),
        }
    }
}

/// Scripted into `FakePg::fail_next`: that login never answers.
pub const HANG: &str = "(hang)";

/// A Postgres login: accepts a password only if it is a token that the workspace minted and
/// that was not revoked. Records every login.
#[derive(Clone, Default)]
pub struct FakePg {
    pub revoked: Rc<RefCell<HashSet<String>>>,
    pub logins: Rc<RefCell<Vec<(String, bool)>>>,
    pub fail_next: Rc<RefCell<VecDeque<String>>>,
    pub reject_all: Rc<Cell<bool>>,
    pub workspace: Rc<RefCell<Option<FakeWorkspace>>>,
    /// The CA root passed with every login.
    pub ca_roots: Rc<RefCell<Vec<Option<String>>>>,
}

impl FakePg {
    pub fn new(workspace: &FakeWorkspace) -> Self {
        let pg = FakePg::default();
        *pg.workspace.borrow_mut() = Some(workspace.clone());
        pg
    }
}

impl FakePg {
    /// One login attempt, answered at once.
    fn login(&self, address: &Secret, ca_root: Option<&str>) -> Result<String, String> {
        self.ca_roots.borrow_mut().push(ca_root.map(str::to_owned));
        let text = address.expose();
        let rest = text.strip_prefix("postgres://").expect("URL form");
        let (userinfo, _) = rest.rsplit_once('@').unwrap();
        let (user, password) = userinfo.split_once(':').unwrap();
        let password = percent_encoding::percent_decode_str(password)
            .decode_utf8()
            .unwrap()
            .into_owned();
        let minted = self.workspace.borrow().as_ref().unwrap().minted();
        let ok = !self.reject_all.get()
            && minted.contains(&password)
            && !self.revoked.borrow().contains(&password);
        self.logins.borrow_mut().push((password.clone(), ok));
        if ok {
            Ok(format!("connection as {user}"))
        } else {
            Err(format!(
                "db error: FATAL: password authentication failed for user \"{user}\" (SQLSTATE 28P01) while logging in with {text}"
            ))
        }
    }
}

impl Connector for FakePg {
    type Connection = String;
    async fn open(&self, address: &Secret, ca_root: Option<&str>) -> Result<String, ConnectError> {
        yield_now().await;
        let next = self.fail_next.borrow_mut().pop_front();
        if let Some(msg) = next {
            if msg == HANG {
                futures::future::pending::<()>().await;
            }
            return Err(msg.into());
        }
        self.login(address, ca_root).map_err(Into::into)
    }
}

impl ConnectorNow for FakePg {
    type Connection = String;
    fn open_now(&self, address: &Secret, ca_root: Option<&str>) -> Result<String, ConnectError> {
        if let Some(msg) = self.fail_next.borrow_mut().pop_front() {
            return Err(msg.into());
        }
        self.login(address, ca_root).map_err(Into::into)
    }
}

/// Runs futures concurrently the way one Spin instance runs its requests: on one thread, each as
/// its own task, where a task may only go to sleep while it waits on a host event. In these
/// fakes every host event (a timer, HTTP, key-value, a login) completes through [`yield_now`],
/// which wakes the task during its own poll. So a task that returns `Pending` without having
/// been woken that way is waiting only on another task (a lock, a channel, a shared future):
/// wit-bindgen 0.57 without `inter-task-wakeup` panics there, and so does this executor.
pub fn run_like_spin<'a, T>(
    futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>>,
) -> Vec<T> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct SelfWake(AtomicBool);
    impl Wake for SelfWake {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let mut tasks: Vec<_> = futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = tasks.iter().map(|_| None).collect();
    let mut polls = 0usize;
    while results.iter().any(Option::is_none) {
        for (i, slot) in tasks.iter_mut().enumerate() {
            let Some(future) = slot.as_mut() else {
                continue;
            };
            polls += 1;
            assert!(polls < 50_000_000, "tasks do not finish");
            let flag = Arc::new(SelfWake(AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(v) => {
                    results[i] = Some(v);
                    *slot = None;
                }
                Poll::Pending => assert!(
                    flag.0.load(Ordering::SeqCst),
                    "task {i} sleeps waiting only on another task (a Rust-side event): \
                     Spin's executor panics here"
                ),
            }
        }
    }
    results.into_iter().map(Option::unwrap).collect()
}

/// Boxes a future for [`run_like_spin`].
pub fn task<'a, T>(
    f: impl std::future::Future<Output = T> + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>> {
    Box::pin(f)
}
