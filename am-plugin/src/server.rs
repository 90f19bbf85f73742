//! XML-RPC over HTTPS: rustls with a mandatory client certificate, hyper 1 per connection.
//!
//! The TLS layer checks only that the client proves possession of its certificate's key (the
//! handshake signature, verified with the crypto provider's algorithms). It does not judge
//! the chain: GENI chains use SHA-1 and odd extensions that WebPKI refuses, so the chain is
//! handed to the GENI authorizer, which validates it against the GENI trust roots per call.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::aggregate::{Am, Caller};
use crate::api::{self, ApiVersion};
use crate::xmlrpc;

/// Largest request body accepted (RSpecs and credentials can be big, not this big).
pub const MAX_BODY: usize = 32 << 20;

/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

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

async fn handle_http(
    am: Arc<Am>,
    caller: Arc<Caller>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(api) = ApiVersion::from_path(req.uri().path()) else {
        return Ok(reply(StatusCode::NOT_FOUND, b"no such endpoint; use /am/3.0 or /am/2.0\n".to_vec()));
    };
    if req.method() != hyper::Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, b"XML-RPC needs POST\n".to_vec()));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(reply(StatusCode::OK, xmlrpc::write_fault(-32700, &format!("request body: {e}")))),
    };
    let out = match xmlrpc::parse_call(&body) {
        Err(e) => xmlrpc::write_fault(-32700, &e.to_string()),
        Ok((name, params)) => match api::handle(&am, api, &caller, &name, params).await {
            Ok(v) => xmlrpc::write_response(&v),
            Err((code, msg)) => xmlrpc::write_fault(code, &msg),
        },
    };
    Ok(reply(StatusCode::OK, out))
}

/// Serves until `shutdown` completes.
pub async fn serve(am: Arc<Am>, listener: TcpListener, tls: Arc<ServerConfig>, shutdown: impl Future<Output = ()>) {
    let acceptor = TlsAcceptor::from(tls);
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let am = am.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
            let svc = hyper::service::service_fn(move |req| handle_http(am.clone(), caller.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
