//! Outbound HTTP through `wasi:http/outgoing-handler@0.2`.

use std::io::Write as _;

use lakebase::adapter::MAX_BODY;
use lakebase::host::{HostError, Http, HttpRequest, HttpResponse};

use crate::wait;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// The host's own limits on one exchange, in nanoseconds. The core bounds the whole exchange
/// too (its deadline cuts a hung or trickling answer: every wait here yields to it, see
/// `wait.rs`); these also stop the host's side of the request.
const TIMEOUT_NS: u64 = 10_000_000_000;
/// Outbound HTTP over `wasi:http` 0.2 (the host decides which destinations are allowed).
#[derive(Clone, Copy, Debug, Default)]
pub struct WasiHttp;

impl Http for WasiHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HostError> {
        send(request).await
    }
}

async fn send(request: HttpRequest) -> Result<HttpResponse, HostError> {
    let (parts, body) = request.into_parts();
    let mut headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    // Without an explicit length some token endpoints see a chunked body and refuse it.
    headers.push((
        "content-length".to_owned(),
        body.len().to_string().into_bytes(),
    ));
    let fields = Fields::from_list(&headers).map_err(|e| format!("invalid header: {e:?}"))?;
    let outgoing = OutgoingRequest::new(fields);
    let method = match parts.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PUT" => Method::Put,
        other => Method::Other(other.to_owned()),
    };
    let uri = &parts.uri;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => Scheme::Other(other.to_owned()),
        None => return Err("request URL has no scheme".to_owned().into()),
    };
    let set = |ok: Result<(), ()>, what: &str| ok.map_err(|()| format!("invalid request {what}"));
    set(outgoing.set_method(&method), "method")?;
    set(outgoing.set_scheme(Some(&scheme)), "scheme")?;
    set(
        outgoing.set_authority(uri.authority().map(|a| a.as_str())),
        "authority",
    )?;
    set(
        outgoing.set_path_with_query(uri.path_and_query().map(|p| p.as_str())),
        "path",
    )?;

    let outgoing_body = outgoing
        .body()
        .map_err(|()| "request body unavailable".to_owned())?;
    // The body is written and finished before the request is handed over: small bodies fit
    // the host's buffer, and a write racing the host's send can find the stream closed.
    {
        let mut stream = outgoing_body
            .write()
            .map_err(|()| "request body stream unavailable".to_owned())?;
        stream
            .write_all(&body)
            .and_then(|()| std::io::Write::flush(&mut stream))
            .map_err(|e| format!("writing the request body: {e}"))?;
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|e| format!("{e:?}"))?;
    let options = RequestOptions::new();
    // An error here means the host does not support that timeout: the core's deadline remains.
    let _ = options.set_connect_timeout(Some(TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(TIMEOUT_NS));
    let _ = options.set_between_bytes_timeout(Some(TIMEOUT_NS));
    let pending =
        outgoing_handler::handle(outgoing, Some(options)).map_err(HostError::from_wasi_http)?;

    // Dropping `pending` (a deadline dropping this future) cancels the request on the host.
    let response = {
        let answered = pending.subscribe();
        loop {
            match pending.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(HostError::from_wasi_http(code)),
                Some(Err(())) => return Err("the response was already taken".to_owned().into()),
                None => wait::ready(&answered).await,
            }
        }
    };
    let status = response.status();
    let mut builder = http::Response::builder().status(status);
    for (name, value) in response.headers().entries() {
        builder = builder.header(name, value);
    }
    let incoming = response
        .consume()
        .map_err(|()| "response body unavailable".to_owned())?;
    let bytes = read_body(&incoming).await?;
    drop(incoming);
    builder
        .body(bytes)
        .map_err(|e| format!("unreadable response: {e}").into())
}

/// The whole body, at most one byte past [`MAX_BODY`] (the core refuses what is larger).
async fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = incoming
        .stream()
        .map_err(|()| "response body stream unavailable".to_owned())?;
    let readable = stream.subscribe();
    let mut bytes = Vec::new();
    loop {
        match stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => wait::ready(&readable).await,
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_BODY {
                    return Err(format!("answer larger than {MAX_BODY} bytes"));
                }
            }
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the response: {}", e.to_debug_string()));
            }
        }
    }
}
