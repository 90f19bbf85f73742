//! XML-RPC over HTTPS: rustls with a mandatory client certificate, hyper 1 per connection.
//!
//! The TLS layer checks only that the client proves possession of its certificate's key (the
//! handshake signature, verified with the crypto provider's algorithms). It does not judge
//! the chain: GENI chains use SHA-1 and odd extensions that WebPKI refuses, so the chain is
//! handed to the GENI authorizer, which validates it against the GENI trust roots per call.
//!
//! So any client with any certificate gets as far as sending a request, and everything up to
//! the authorizer is bounded by [`ServerLimits`]: connections at accept (in total and per
//! client address), the time to send a request head (also on an idle kept-alive connection)
//! and a body, the body size (a declared length over the limit is refused unread), the bytes
//! of bodies buffered at once over all connections, and the decoder's nesting and element
//! count ([`xmlrpc`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::aggregate::{Am, Caller};
use crate::api::{self, ApiVersion, Verb};
use crate::config::ServerLimits;
use crate::xmlrpc;

/// Requires a client certificate and verifies the handshake signature, leaving the chain to
/// the GENI authorizer.
#[derive(Debug)]
pub struct GeniClientVerifier {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for GeniClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Accepted here on purpose: see the module documentation.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why the TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read.
    #[error("Reading {0}")]
    Read(String, #[source] std::io::Error),
    /// A PEM file held no certificate or key.
    #[error("No {0} in {1}")]
    Missing(&'static str, String),
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
}

/// The server TLS configuration from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsSetupError::Read(p.display().to_string(), e));
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::Read(cert.display().to_string(), e))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Missing("certificate", cert.display().to_string()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| TlsSetupError::Read(key.display().to_string(), e))?
        .ok_or_else(|| TlsSetupError::Missing("private key", key.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(GeniClientVerifier { provider: provider.clone() });
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/xml"));
    r
}

/// A refusal that also ends the connection: the rest of the body is never read.
fn refuse(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = reply(status, xmlrpc::write_fault(-32700, msg));
    r.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    r
}

/// Open connections, in total and per client address. Checked at accept, before TLS, so a
/// refused connection costs an accept and a close.
#[derive(Debug)]
struct Gate {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        // IPv4 clients of a dual-stack listener count as their IPv4 address.
        let ip = ip.to_canonical();
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *g;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.max_total || mine >= self.max_per_ip {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, mine + 1);
        Some(Admitted { gate: self.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut g = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *g;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Bytes of request bodies held at once over all connections.
#[derive(Debug)]
struct BodyBudget {
    cap: usize,
    used: AtomicUsize,
}

/// Bytes of the budget held by one request until it is answered.
#[derive(Debug)]
struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    fn new(budget: &Arc<BodyBudget>) -> Reservation {
        Reservation { budget: budget.clone(), bytes: 0 }
    }

    /// Holds `n` more bytes; `false` (and nothing held) when the budget has no room.
    fn grow(&mut self, n: usize) -> bool {
        let cap = self.budget.cap;
        let ok = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= cap))
            .is_ok();
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a request body was not read whole.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("server busy: too many request bodies in progress, retry later")]
    Busy,
    #[error("request body not received within {0} ms")]
    Timeout(u64),
    #[error("request body: {0}")]
    Read(#[from] hyper::Error),
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a body of at most `max` bytes into one buffer, holding budget for every byte. A
/// declared length over the limit is refused before a byte of the body is read.
async fn read_body(
    mut body: Incoming,
    declared: Option<u64>,
    max: usize,
    budget: &Arc<BodyBudget>,
) -> Result<(Vec<u8>, Reservation), BodyError> {
    let mut held = Reservation::new(budget);
    let mut buf = Vec::new();
    if let Some(n) = declared {
        let n = usize::try_from(n).ok().filter(|&n| n <= max).ok_or(BodyError::TooLarge(max))?;
        if !held.grow(n) {
            return Err(BodyError::Busy);
        }
        buf.reserve_exact(n);
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        let len = buf.len() + data.len();
        if len > max {
            return Err(BodyError::TooLarge(max));
        }
        if len > held.bytes && !held.grow(len - held.bytes) {
            return Err(BodyError::Busy);
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf, held))
}

/// Bodies above this size are decoded on a blocking thread, off the connection tasks.
const INLINE_PARSE: usize = 256 << 10;

/// Per-server state shared by the connections.
struct Shared {
    am: Arc<Am>,
    limits: ServerLimits,
    budget: Arc<BodyBudget>,
}

async fn handle_http(
    shared: Arc<Shared>,
    caller: Arc<Caller>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(api) = ApiVersion::from_path(req.uri().path()) else {
        return Ok(reply(StatusCode::NOT_FOUND, b"no such endpoint; use /am/3.0 or /am/2.0\n".to_vec()));
    };
    if req.method() != hyper::Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, b"XML-RPC needs POST\n".to_vec()));
    }
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let l = &shared.limits;
    let read = read_body(req.into_body(), declared, l.max_body_bytes, &shared.budget);
    let (body, _held) = match tokio::time::timeout(Duration::from_millis(l.body_timeout_ms), read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Ok(refuse(e.status(), &e.to_string())),
        Err(_) => {
            let e = BodyError::Timeout(l.body_timeout_ms);
            return Ok(refuse(e.status(), &e.to_string()));
        }
    };
    // The method name comes first in the document: an unknown one is refused before the
    // parameters are decoded.
    let known = move |name: &str| Verb::parse(api, name).is_some();
    let parsed = if body.len() <= INLINE_PARSE {
        xmlrpc::parse_call_if(&body, known)
    } else {
        match tokio::task::spawn_blocking(move || xmlrpc::parse_call_if(&body, known)).await {
            Ok(r) => r,
            Err(e) => return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, xmlrpc::write_fault(-32603, &e.to_string()))),
        }
    };
    let out = match parsed {
        Err(xmlrpc::CodecError::UnknownMethod(name)) => {
            xmlrpc::write_fault(-32601, &format!("Method {name} not supported on AM API v{}", api.number()))
        }
        Err(e) => xmlrpc::write_fault(-32700, &e.to_string()),
        Ok((name, params)) => match api::handle(&shared.am, api, &caller, &name, params).await {
            Ok(v) => xmlrpc::write_response(&v),
            Err((code, msg)) => xmlrpc::write_fault(code, &msg),
        },
    };
    Ok(reply(StatusCode::OK, out))
}

/// Serves until `shutdown` completes, within `limits`.
pub async fn serve(
    am: Arc<Am>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let gate = Arc::new(Gate {
        max_total: limits.max_connections,
        max_per_ip: limits.max_connections_per_ip,
        open: Mutex::new((0, HashMap::new())),
    });
    let budget = Arc::new(BodyBudget { cap: limits.body_memory_bytes, used: AtomicUsize::new(0) });
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    let shared = Arc::new(Shared { am, limits, budget });
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = gate.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: connection limit");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            // The handshake gets the same time as a request head: a client that connects and
            // sends nothing holds its place no longer than one that stalls mid-head.
            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let chain: Vec<Vec<u8>> =
                tls.get_ref().1.peer_certificates().map(|c| c.iter().map(|d| d.to_vec()).collect()).unwrap_or_default();
            let caller = Arc::new(Caller { chain });
            let svc = hyper::service::service_fn(move |req| handle_http(shared.clone(), caller.clone(), req));
            // The head timeout also runs while a kept-alive connection waits for its next
            // request, so idle connections give their place back.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// hyper's per-connection read buffer limit (request heads are far smaller; bodies stream
/// through it into [`read_body`]).
const MAX_BUF: usize = 64 << 10;
