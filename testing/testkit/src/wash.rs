//! What driving a real wasmCloud host (`wash host`, wasmCloud 2.x) takes besides the process
//! itself: an OCI registry to pull the component from ([`OciRegistry`]), and a NATS client for
//! the workload API it serves on `runtime.host.<id>.*` ([`NatsClient`]). Both are small and
//! synchronous, on the loopback, stopped on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The OCI media type of a WebAssembly component layer (`oci-wasm`'s `WASM_LAYER_MEDIA_TYPE`,
/// what `wash oci push` writes).
const WASM_LAYER: &str = "application/wasm";
/// The config media type of a WebAssembly OCI artifact (`oci-wasm`).
const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[derive(Default)]
struct Store {
    /// `<repository>:<tag>` and `<repository>@<digest>` → the manifest.
    manifests: BTreeMap<String, Vec<u8>>,
    /// digest → blob.
    blobs: BTreeMap<String, Vec<u8>>,
    /// `METHOD path`, one per request served.
    requests: Vec<String>,
}

/// A read-only OCI distribution registry on `127.0.0.1:<free port>`, plain HTTP, no
/// authentication, holding the WebAssembly components [`OciRegistry::push`]ed into it: what
/// `wash host --allow-insecure-registries` pulls a workload's component from. It serves the
/// pull side of the distribution API that a registry client needs (`GET /v2/`, `HEAD`/`GET`
/// manifests by tag or digest, `GET` blobs), nothing else. Stopped on drop.
pub struct OciRegistry {
    addr: String,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
}

impl OciRegistry {
    /// Starts the registry.
    pub fn start() -> Result<OciRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let store = Arc::new(Mutex::new(Store::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let store = store.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &store);
                    });
                }
            });
        }
        Ok(OciRegistry { addr, store, stop })
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stores `wasm` as the image `<repository>:<tag>` (one layer of type `application/wasm`,
    /// as `wash oci push` makes it) and returns its reference,
    /// `127.0.0.1:<port>/<repository>:<tag>`.
    pub fn push(&self, repository: &str, tag: &str, wasm: Vec<u8>) -> Result<String> {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [sha256(&wasm)],
        }))?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": WASM_CONFIG, "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": WASM_LAYER, "digest": sha256(&wasm), "size": wasm.len()}],
        }))?;
        let digest = sha256(&manifest);
        let mut store = self.store.lock().unwrap();
        store.blobs.insert(sha256(&config), config);
        store.blobs.insert(sha256(&wasm), wasm);
        store
            .manifests
            .insert(format!("{repository}:{tag}"), manifest.clone());
        store
            .manifests
            .insert(format!("{repository}@{digest}"), manifest);
        Ok(format!("{}/{repository}:{tag}", self.addr))
    }

    /// The requests served so far, `METHOD path` each.
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Serves the requests of one connection (keep-alive) until the client closes it.
fn serve(stream: TcpStream, store: &Mutex<Store>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let path = path.split('?').next().unwrap_or_default().to_owned();
        let (status, content_type, digest, bytes) = {
            let mut store = store.lock().unwrap();
            store.requests.push(format!("{method} {path}"));
            answer(&store, &method, &path)
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: {content_type}\r\ndocker-distribution-api-version: registry/2.0\r\n",
            bytes.len()
        );
        if let Some(digest) = digest {
            head.push_str(&format!("docker-content-digest: {digest}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if method != "HEAD" {
            out.write_all(&bytes)?;
        }
        out.flush()?;
    }
}

/// Status line, content type, digest header and body for one request.
fn answer(
    store: &Store,
    method: &str,
    path: &str,
) -> (&'static str, &'static str, Option<String>, Vec<u8>) {
    const JSON: &str = "application/json";
    let not_found = |code: &str| {
        let body = serde_json::json!({"errors": [{"code": code, "message": path}]}).to_string();
        ("404 Not Found", JSON, None, body.into_bytes())
    };
    if method != "GET" && method != "HEAD" {
        let body = serde_json::json!({"errors": [{"code": "UNSUPPORTED", "message": "read-only"}]});
        return (
            "405 Method Not Allowed",
            JSON,
            None,
            body.to_string().into_bytes(),
        );
    }
    if path == "/v2/" || path == "/v2" {
        return ("200 OK", JSON, None, b"{}".to_vec());
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found("NAME_UNKNOWN");
    };
    if let Some((repository, reference)) = rest.rsplit_once("/manifests/") {
        let sep = if reference.starts_with("sha256:") {
            "@"
        } else {
            ":"
        };
        return match store
            .manifests
            .get(&format!("{repository}{sep}{reference}"))
        {
            Some(m) => ("200 OK", OCI_MANIFEST, Some(sha256(m)), m.clone()),
            None => not_found("MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match store.blobs.get(digest) {
            Some(b) => (
                "200 OK",
                "application/octet-stream",
                Some(digest.to_owned()),
                b.clone(),
            ),
            None => not_found("BLOB_UNKNOWN"),
        };
    }
    not_found("NAME_UNKNOWN")
}

/// A minimal synchronous NATS client (the text protocol: `CONNECT`, `SUB`, `PUB`, `MSG`,
/// `PING`/`PONG`), enough to wait for a wasmCloud host's heartbeat and to send it requests.
pub struct NatsClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// What was read of a line not yet complete (a read that timed out keeps it here).
    partial: Vec<u8>,
    next_sid: u64,
}

/// One message received.
#[derive(Debug, Clone)]
pub struct NatsMessage {
    /// The subject it was published on.
    pub subject: String,
    /// The subscription it came through.
    pub sid: u64,
    /// Where a reply goes, if the publisher asked for one.
    pub reply: Option<String>,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl NatsClient {
    /// Connects to `url` (`nats://host:port`).
    pub fn connect(url: &str) -> Result<NatsClient> {
        let addr = url.strip_prefix("nats://").unwrap_or(url);
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {url}"))?;
        stream.set_nodelay(true)?;
        let mut client = NatsClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            partial: Vec::new(),
            next_sid: 1,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let info = client
            .read_line(deadline)?
            .with_context(|| format!("no INFO from {url} within 10 s"))?;
        if !info.starts_with("INFO ") {
            bail!("not a NATS server at {url}: {info:?}");
        }
        client.writer.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false,\"name\":\"lakebase-testkit\"}\r\n",
        )?;
        client.ping()?;
        Ok(client)
    }

    /// A round trip to the server: what was sent before (a subscription) has taken effect
    /// when this returns. Messages that arrive meanwhile are dropped.
    pub fn ping(&mut self) -> Result<()> {
        self.writer.write_all(b"PING\r\n")?;
        self.writer.flush()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.read_line(deadline)?.as_deref() {
                Some("PONG") => return Ok(()),
                Some(l) if l.starts_with("-ERR") => bail!("NATS: {l}"),
                Some(l) if l.starts_with("MSG ") => {
                    self.read_payload(l)?;
                }
                Some(_) => {}
                None => bail!("no PONG from NATS within 10 s"),
            }
        }
    }

    /// Subscribes to `subject` (wildcards allowed); returns the subscription's id.
    pub fn subscribe(&mut self, subject: &str) -> Result<u64> {
        let sid = self.next_sid;
        self.next_sid += 1;
        write!(self.writer, "SUB {subject} {sid}\r\n")?;
        self.writer.flush()?;
        Ok(sid)
    }

    /// Publishes `payload` on `subject`, with `reply` as its reply subject.
    pub fn publish(&mut self, subject: &str, reply: Option<&str>, payload: &[u8]) -> Result<()> {
        let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
        write!(self.writer, "PUB {subject}{reply} {}\r\n", payload.len())?;
        self.writer.write_all(payload)?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()?;
        Ok(())
    }

    /// The next message of any subscription, or `None` when none came within `wait`.
    pub fn next_message_within(&mut self, wait: Duration) -> Result<Option<NatsMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            let Some(line) = self.read_line(deadline)? else {
                return Ok(None);
            };
            if line == "PING" {
                self.writer.write_all(b"PONG\r\n")?;
                continue;
            }
            if line.starts_with("-ERR") {
                bail!("NATS: {line}");
            }
            if line.starts_with("MSG ") {
                return self.read_payload(&line).map(Some);
            }
        }
    }

    /// Sends `payload` to `subject` and waits up to `timeout` for the first reply.
    pub fn request(&mut self, subject: &str, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let inbox = format!(
            "_INBOX.lakebase-testkit.{}.{}",
            std::process::id(),
            self.next_sid
        );
        let sid = self.subscribe(&inbox)?;
        self.publish(subject, Some(&inbox), payload)?;
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let msg = self.next_message_within(wait)?.with_context(|| {
                format!("no reply to a request on {subject} within {timeout:?}")
            })?;
            if msg.sid == sid {
                write!(self.writer, "UNSUB {sid}\r\n")?;
                return Ok(msg.payload);
            }
        }
    }

    /// The payload of the message whose `MSG` line is `line`.
    fn read_payload(&mut self, line: &str) -> Result<NatsMessage> {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (subject, sid, reply, size) = match fields.as_slice() {
            [subject, sid, size] => (*subject, *sid, None, *size),
            [subject, sid, reply, size] => (*subject, *sid, Some(reply.to_string()), *size),
            _ => bail!("NATS: a MSG line not understood: {line}"),
        };
        let size: usize = size.parse().context("NATS: MSG size")?;
        // The payload follows its line at once.
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut payload = vec![0; size + 2];
        self.reader.read_exact(&mut payload)?;
        payload.truncate(size);
        Ok(NatsMessage {
            subject: subject.to_owned(),
            sid: sid.parse().context("NATS: MSG sid")?,
            reply,
            payload,
        })
    }

    /// The next protocol line, or `None` at `deadline`.
    fn read_line(&mut self, deadline: Instant) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line).trim_end().to_owned()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let available = match self.reader.fill_buf() {
                Ok([]) => bail!("NATS closed the connection"),
                Ok(bytes) => bytes,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            // Up to the end of the line only: a payload may follow it.
            let take = available
                .iter()
                .position(|b| *b == b'\n')
                .map_or(available.len(), |i| i + 1);
            self.partial.extend_from_slice(&available[..take]);
            self.reader.consume(take);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request on a fresh connection: status line, headers (lower-case names), body.
    fn get(addr: &str, method: &str, path: &str) -> (String, BTreeMap<String, String>, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
        }
        let mut body = vec![0; headers["content-length"].parse().unwrap()];
        if method != "HEAD" {
            reader.read_exact(&mut body).unwrap();
        }
        (status.trim().to_owned(), headers, body)
    }

    #[test]
    fn the_registry_serves_a_pushed_component_as_oci_clients_pull_it() {
        let registry = OciRegistry::start().unwrap();
        let wasm = b"\0asm\x0d\0\x01\0".to_vec();
        let image = registry.push("lakebase/app", "test", wasm.clone()).unwrap();
        assert_eq!(image, format!("{}/lakebase/app:test", registry.addr()));
        let addr = registry.addr();

        assert!(get(addr, "GET", "/v2/").0.ends_with("200 OK"));
        let (status, headers, manifest) = get(addr, "GET", "/v2/lakebase/app/manifests/test");
        assert!(status.ends_with("200 OK"), "{status}");
        let digest = sha256(&manifest);
        assert_eq!(headers["docker-content-digest"], digest);
        assert_eq!(headers["content-type"], OCI_MANIFEST);
        let (_, head, _) = get(addr, "HEAD", "/v2/lakebase/app/manifests/test");
        assert_eq!(head["docker-content-digest"], digest);
        assert_eq!(head["content-length"], manifest.len().to_string());
        let (status, _, by_digest) =
            get(addr, "GET", &format!("/v2/lakebase/app/manifests/{digest}"));
        assert!(status.ends_with("200 OK") && by_digest == manifest);

        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER);
        assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG);
        for blob in [&manifest["layers"][0], &manifest["config"]] {
            let digest = blob["digest"].as_str().unwrap();
            let (status, headers, bytes) =
                get(addr, "GET", &format!("/v2/lakebase/app/blobs/{digest}"));
            assert!(status.ends_with("200 OK"), "{status}");
            assert_eq!(sha256(&bytes), digest);
            assert_eq!(headers["docker-content-digest"], digest);
            assert_eq!(blob["size"], bytes.len());
        }
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(
            get(addr, "GET", &format!("/v2/lakebase/app/blobs/{layer}")).2,
            wasm
        );
        assert!(
            get(addr, "GET", "/v2/lakebase/app/manifests/other")
                .0
                .ends_with("404 Not Found")
        );
        assert!(
            get(addr, "PUT", "/v2/lakebase/app/manifests/test")
                .0
                .ends_with("405 Method Not Allowed")
        );
        assert!(
            registry
                .requests()
                .contains(&"HEAD /v2/lakebase/app/manifests/test".to_owned())
        );
    }

    #[test]
    fn the_nats_client_subscribes_publishes_and_requests() {
        let Some(bin) = crate::NatsServer::bin_from_env() else {
            eprintln!("NOTE: no nats-server: the NATS client's test was NOT run");
            return;
        };
        let nats = crate::NatsServer::start(&bin).unwrap();
        let mut service = NatsClient::connect(&nats.url()).unwrap();
        let sid = service.subscribe("svc.*").unwrap();
        service.ping().unwrap();
        let responder = std::thread::spawn(move || {
            let msg = service
                .next_message_within(Duration::from_secs(10))
                .unwrap()
                .expect("a request");
            assert_eq!((msg.sid, msg.subject.as_str()), (sid, "svc.echo"));
            let mut answer = b"echo: ".to_vec();
            answer.extend_from_slice(&msg.payload);
            service
                .publish(
                    msg.reply.as_deref().expect("a reply subject"),
                    None,
                    &answer,
                )
                .unwrap();
            service.ping().unwrap();
        });
        let mut client = NatsClient::connect(&nats.url()).unwrap();
        // A payload with a line break in it, and an empty wait first.
        assert!(
            client
                .next_message_within(Duration::from_millis(50))
                .unwrap()
                .is_none()
        );
        let reply = client
            .request("svc.echo", b"one\r\ntwo", Duration::from_secs(10))
            .unwrap();
        assert_eq!(reply, b"echo: one\r\ntwo");
        responder.join().unwrap();
    }
}
