//! HTTPS server: tokio-rustls with a client-certificate verifier rooted at the cluster CA,
//! hyper 1 for HTTP/1.1.

use super::routes::{dispatch, parse, Reply};
use crate::config::TlsConfig;
use crate::host::Host;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use vnsnap_proto::limits::{clip, MAX_BODY_BYTES, MAX_ECHO_BYTES};
use vnsnap_proto::{ApiError, ErrorKind};

fn read_certs(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut r =
        std::io::BufReader::new(std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
    Ok(rustls_pemfile::certs(&mut r).collect::<Result<Vec<_>, _>>()?)
}

fn read_key(path: &std::path::Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let mut r =
        std::io::BufReader::new(std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
    rustls_pemfile::private_key(&mut r)?.ok_or_else(|| anyhow::anyhow!("{}: no private key", path.display()))
}

/// Builds the TLS acceptor: our certificate, and clients must present one signed by the CA.
pub fn acceptor(tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&tls.ca)? {
        roots.add(c)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&tls.cert)?, read_key(&tls.key)?)?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

fn respond(status: StatusCode, ctype: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, "application/json", serde_json::to_vec(e).unwrap_or_default())
}

/// How much of a refused body is read and dropped, and for how long, so that a client still
/// sending it gets the 400 rather than a connection reset under its upload. Beyond either,
/// the connection is just closed.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request body, bounded before anything parses it: a body announced or found
/// above [`MAX_BODY_BYTES`] is not kept (what follows is dropped as it comes).
async fn read_body(mut body: Incoming) -> Result<Bytes, String> {
    let mut over = hyper::body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64;
    let mut kept = Vec::new();
    let mut seen = 0u64;
    let drain_until = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        let frame = if over {
            match tokio::time::timeout_at(drain_until, body.frame()).await {
                Ok(f) => f,
                Err(_) => break,
            }
        } else {
            body.frame().await
        };
        match frame {
            None => break,
            Some(Err(e)) => return Err(format!("Request body: {e}")),
            Some(Ok(f)) => {
                let Ok(data) = f.into_data() else { continue };
                seen += data.len() as u64;
                if seen > MAX_BODY_BYTES as u64 {
                    over = true;
                    kept = Vec::new();
                }
                if seen > DRAIN_BYTES {
                    break;
                }
                if !over {
                    kept.extend_from_slice(&data);
                }
            }
        }
    }
    if over {
        Err(format!("Request body above the limit of {MAX_BODY_BYTES} bytes"))
    } else {
        Ok(Bytes::from(kept))
    }
}

async fn handle(host: Arc<Host>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let read = read_body(req.into_body()).await;
    let bytes = match read {
        Ok(b) => b,
        Err(message) => {
            tracing::warn!(method = %clip(&method, 16), path = %clip(&path, MAX_ECHO_BYTES), %message, "request refused");
            return Ok(error_response(&ApiError { kind: ErrorKind::BadRequest, message }));
        }
    };
    let result = match parse(&method, &path, query.as_deref(), &bytes) {
        Ok(r) => dispatch(host, r).await,
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(Reply::Json(v)) => respond(StatusCode::OK, "application/json", serde_json::to_vec(&v).unwrap_or_default()),
        Ok(Reply::Text(t)) => respond(StatusCode::OK, "text/plain; charset=utf-8", t.into_bytes()),
        Err(e) => {
            // Client input is never logged whole (a refused body may be megabytes).
            tracing::warn!(
                method = %clip(&method, 16),
                path = %clip(&path, MAX_ECHO_BYTES),
                error = %clip(&e.message, 4 * MAX_ECHO_BYTES),
                "request failed"
            );
            error_response(&e)
        }
    })
}

/// Serves the API until the process ends.
pub async fn serve(host: Arc<Host>, listener: TcpListener, tls: TlsAcceptor) -> anyhow::Result<()> {
    loop {
        let (tcp, peer) = listener.accept().await?;
        let tls = tls.clone();
        let host = host.clone();
        tokio::spawn(async move {
            let stream = match tls.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, "TLS handshake refused: {e}");
                    return;
                }
            };
            let svc = service_fn(move |req| handle(host.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}
