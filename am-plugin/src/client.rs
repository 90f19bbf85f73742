//! A small blocking XML-RPC-over-mutual-TLS client for GENI AMs, with the codec of the AM
//! itself ([`crate::xmlrpc`]). Used by the `vnsnap` CLI and by the test labs.
//!
//! Like omni, it presents the experimenter's certificate (chain) and key and does not check
//! the AM's server certificate.

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
        let bytes = resp.bytes().map_err(|e| transport(error_chain(&e)))?;
        match xmlrpc::parse_response(&bytes) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((code, msg))) => Err(ClientError::Fault { method: method.into(), code, msg }),
            Err(_) if !status.is_success() => Err(transport(format!("HTTP {status}"))),
            Err(e) => Err(ClientError::Codec { method: method.into(), msg: e.to_string() }),
        }
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
