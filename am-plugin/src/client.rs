//! A small blocking XML-RPC-over-mutual-TLS client for GENI AMs, with the codec of the AM
//! itself ([`crate::xmlrpc`]). Used by the `vnsnap` CLI and by the test labs.
//!
//! Like omni, it presents the experimenter's certificate (chain) and key and by default does
//! not check the AM's server certificate; [`XmlRpcClient::verified`] checks its chain against
//! given CA certificates. Replies are read up to [`MAX_REPLY_BYTES`].

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use crate::xmlrpc::{self, Value};

/// Why a call did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The certificate/key PEM could not be used.
    #[error("bad TLS identity: {0}")]
    Identity(String),
    /// Connection, TLS or HTTP failure.
    #[error("{method}: {msg}")]
    Transport {
        /// Method called.
        method: String,
        /// What failed.
        msg: String,
    },
    /// The server answered with an XML-RPC fault.
    #[error("{method}: XML-RPC fault {code}: {msg}")]
    Fault {
        /// Method called.
        method: String,
        /// Fault code.
        code: i64,
        /// Fault string.
        msg: String,
    },
    /// The reply was not XML-RPC.
    #[error("{method}: bad reply: {msg}")]
    Codec {
        /// Method called.
        method: String,
        /// Decoder message.
        msg: String,
    },
}

/// The largest reply read (an advertisement is at most 16 MiB of RSpec; XML-RPC escaping
/// and the envelope add to that).
pub const MAX_REPLY_BYTES: u64 = 64 << 20;

/// An XML-RPC client for one endpoint URL.
#[derive(Debug, Clone)]
pub struct XmlRpcClient {
    http: reqwest::blocking::Client,
    url: String,
}

impl XmlRpcClient {
    /// A client for `url` presenting `identity_pem` (certificate chain followed by the key).
    pub fn new(url: &str, identity_pem: &[u8], timeout: Duration) -> Result<XmlRpcClient, ClientError> {
        let identity = reqwest::Identity::from_pem(identity_pem).map_err(|e| ClientError::Identity(e.to_string()))?;
        let http = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .identity(identity)
            // Like omni: the AM's server certificate is not checked.
            .danger_accept_invalid_certs(true)
            .timeout(timeout)
            .build()
            .map_err(|e| ClientError::Identity(e.to_string()))?;
        Ok(XmlRpcClient { http, url: url.to_string() })
    }

    /// A client for `url` presenting `identity_pem` that accepts the server only with a
    /// certificate chain leading to one of the certificates in `ca_pem`. The host name is not
    /// compared with the certificate: GENI aggregate certificates name the aggregate by URN in
    /// subjectAltName, rarely by host name.
    pub fn verified(
        url: &str,
        identity_pem: &[u8],
        ca_pem: &[u8],
        timeout: Duration,
    ) -> Result<XmlRpcClient, ClientError> {
        let bad = |m: String| ClientError::Identity(m);
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &ca_pem[..]) {
            let c = c.map_err(|e| bad(format!("CA certificates: {e}")))?;
            roots.add(c).map_err(|e| bad(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("no CA certificate in the CA file".into()));
        }
        let certs: Vec<_> = rustls_pemfile::certs(&mut &identity_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("certificate: {e}")))?;
        let key = rustls_pemfile::private_key(&mut &identity_pem[..])
            .map_err(|e| bad(format!("key: {e}")))?
            .ok_or_else(|| bad("no private key".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad(e.to_string()))?;
        let http = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(XmlRpcClient { http, url: url.to_string() })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls a method; `Err` for transport errors and XML-RPC faults.
    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value, ClientError> {
        let body = xmlrpc::write_call(method, params);
        let transport = |msg: String| ClientError::Transport { method: method.into(), msg };
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "text/xml")
            .body(body)
            .send()
            .map_err(|e| transport(error_chain(&e)))?;
        let status = resp.status();
        // Bounded: the server is not trusted to send a reply of sane size.
        let mut bytes = Vec::new();
        resp.take(MAX_REPLY_BYTES + 1).read_to_end(&mut bytes).map_err(|e| transport(error_chain(&e)))?;
        if bytes.len() as u64 > MAX_REPLY_BYTES {
            return Err(transport(format!("reply larger than {MAX_REPLY_BYTES} bytes")));
        }
        match xmlrpc::parse_response(&bytes) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((code, msg))) => Err(ClientError::Fault { method: method.into(), code, msg }),
            Err(_) if !status.is_success() => Err(transport(format!("HTTP {status}"))),
            Err(e) => Err(ClientError::Codec { method: method.into(), msg: e.to_string() }),
        }
    }
}

/// The server certificate's chain checked by webpki against the roots; a name mismatch alone
/// is accepted (see [`XmlRpcClient::verified`]).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        // webpki checks the name only after the chain, so this error means the chain is good.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// An error and its sources on one line (`a: b: c`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}
