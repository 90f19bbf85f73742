//! Async HTTPS client for the agent API, with a client certificate (mutual TLS).

use crate::*;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

/// Failure of an agent call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading the TLS material failed.
    #[error("Reading {0}")]
    Files(String, #[source] std::io::Error),
    /// The TLS material was unusable.
    #[error("Bad TLS material")]
    Tls(#[source] reqwest::Error),
    /// The request could not be sent or the reply not read.
    #[error("Agent {0} unreachable")]
    Transport(String, #[source] reqwest::Error),
    /// The agent answered with an error.
    #[error("Agent {0} refused")]
    Api(String, #[source] ApiError),
    /// The agent's reply did not parse.
    #[error("Agent {0} sent an unreadable reply: {1}")]
    Decode(String, String),
}

impl ClientError {
    /// The agent's error class, when the agent answered.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api(_, e) => Some(e.kind),
            _ => None,
        }
    }
}

/// A client bound to one agent.
#[derive(Clone, Debug)]
pub struct AgentClient {
    base: String,
    http: reqwest::Client,
}

/// PEM files of a cluster identity.
#[derive(Clone, Debug)]
pub struct TlsFiles<'a> {
    /// The cluster CA that signed the agents' certificates.
    pub ca: &'a Path,
    /// Client certificate (PEM).
    pub cert: &'a Path,
    /// Client key (PEM, PKCS#8).
    pub key: &'a Path,
}

impl AgentClient {
    /// A client for the agent at `addr` (`host:port`).
    pub fn new(addr: &str, tls: &TlsFiles<'_>) -> Result<Self, ClientError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| ClientError::Files(p.display().to_string(), e));
        let ca = reqwest::Certificate::from_pem(&read(tls.ca)?).map_err(ClientError::Tls)?;
        let mut ident = read(tls.cert)?;
        ident.extend_from_slice(b"\n");
        ident.extend_from_slice(&read(tls.key)?);
        let identity = reqwest::Identity::from_pem(&ident).map_err(ClientError::Tls)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(ClientError::Tls)?;
        Ok(AgentClient { base: format!("https://{addr}{API_PREFIX}"), http })
    }

    /// Base URL of the agent API.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Transport(self.base.clone(), e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(self.base.clone(), e))?;
        if !status.is_success() {
            let err = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| ApiError {
                kind: ErrorKind::Internal,
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            });
            return Err(ClientError::Api(self.base.clone(), err));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(self.base.clone(), e.to_string()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET /host`.
    pub async fn host(&self) -> Result<HostInfo, ClientError> {
        self.call(self.http.get(self.url("/host"))).await
    }

    /// `GET /domains`.
    pub async fn domains(&self) -> Result<Vec<DomainInfo>, ClientError> {
        self.call(self.http.get(self.url("/domains"))).await
    }

    /// `GET /domains/{name}`.
    pub async fn domain(&self, name: &str) -> Result<DomainInfo, ClientError> {
        self.call(self.http.get(self.url(&format!("/domains/{name}")))).await
    }

    /// `POST /domains`.
    pub async fn define(&self, spec: &DomainSpec) -> Result<DomainInfo, ClientError> {
        self.call(self.http.post(self.url("/domains")).json(spec)).await
    }

    /// `POST /domains/{name}/{action}`.
    pub async fn action(&self, name: &str, action: Action, req: &ActionRequest) -> Result<DomainInfo, ClientError> {
        let a = serde_json::to_value(action).unwrap_or_default();
        let a = a.as_str().unwrap_or("start");
        self.call(self.http.post(self.url(&format!("/domains/{name}/{a}"))).json(req)).await
    }

    /// `DELETE /domains/{name}`.
    pub async fn destroy(&self, name: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(self.http.delete(self.url(&format!("/domains/{name}")))).await?;
        Ok(())
    }

    /// `GET /domains/{name}/console`.
    pub async fn console(&self, name: &str) -> Result<String, ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/domains/{name}/console")))
            .send()
            .await
            .map_err(|e| ClientError::Transport(self.base.clone(), e))?;
        resp.text().await.map_err(|e| ClientError::Transport(self.base.clone(), e))
    }

    /// `POST /domains/{name}/guest`: one request to the guest's control channel.
    pub async fn guest(&self, name: &str, request: &serde_json::Value) -> Result<serde_json::Value, ClientError> {
        self.call(self.http.post(self.url(&format!("/domains/{name}/guest"))).json(request)).await
    }

    /// `GET /events?after=N&wait_ms=M` (long poll).
    pub async fn events(&self, after: u64, wait_ms: u64) -> Result<Vec<Event>, ClientError> {
        self.call(self.http.get(self.url(&format!("/events?after={after}&wait_ms={wait_ms}")))).await
    }

    /// `PUT /segments/{id}`.
    pub async fn set_segment_peers(&self, segment: SegmentId, peers: &SegmentPeers) -> Result<(), ClientError> {
        let _: serde_json::Value =
            self.call(self.http.put(self.url(&format!("/segments/{segment}"))).json(peers)).await?;
        Ok(())
    }

    /// `GET /switch`.
    pub async fn switch(&self) -> Result<SwitchStats, ClientError> {
        self.call(self.http.get(self.url("/switch"))).await
    }

    /// `POST /snapshots/prepare`.
    pub async fn snapshot_prepare(&self, req: &PrepareRequest) -> Result<PrepareReply, ClientError> {
        self.call(self.http.post(self.url("/snapshots/prepare")).json(req)).await
    }

    /// `POST /snapshots/{id}/cut`.
    pub async fn snapshot_cut(&self, id: &str, req: &CutRequest) -> Result<CutReply, ClientError> {
        self.call(self.http.post(self.url(&format!("/snapshots/{id}/cut"))).json(req)).await
    }

    /// `GET /snapshots/{id}`.
    pub async fn snapshot_status(&self, id: &str) -> Result<SaveStatus, ClientError> {
        self.call(self.http.get(self.url(&format!("/snapshots/{id}")))).await
    }

    /// `POST /snapshots/{id}/commit`.
    pub async fn snapshot_commit(&self, id: &str) -> Result<CommitReply, ClientError> {
        self.call(self.http.post(self.url(&format!("/snapshots/{id}/commit")))).await
    }

    /// `POST /snapshots/{id}/abort`.
    pub async fn snapshot_abort(&self, id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(self.http.post(self.url(&format!("/snapshots/{id}/abort")))).await?;
        Ok(())
    }

    /// `DELETE /snapshots/{id}`.
    pub async fn snapshot_delete(&self, id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(self.http.delete(self.url(&format!("/snapshots/{id}")))).await?;
        Ok(())
    }

    /// `POST /restores/check`: verifies the files of a restore, changing nothing.
    pub async fn restore_check(&self, req: &RestoreRequest) -> Result<RestoreReply, ClientError> {
        self.call(self.http.post(self.url("/restores/check")).json(req)).await
    }

    /// `POST /restores/prepare`.
    pub async fn restore_prepare(&self, req: &RestoreRequest) -> Result<RestoreReply, ClientError> {
        self.call(self.http.post(self.url("/restores/prepare")).json(req)).await
    }

    /// `POST /restores/{id}/resume`.
    pub async fn restore_resume(&self, id: &str) -> Result<RestoreReply, ClientError> {
        self.call(self.http.post(self.url(&format!("/restores/{id}/resume")))).await
    }

    /// `POST /restores/{id}/abort`.
    pub async fn restore_abort(&self, id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(self.http.post(self.url(&format!("/restores/{id}/abort")))).await?;
        Ok(())
    }

    /// `POST /images`: cut one disk of a domain for an image (flattening continues).
    pub async fn image_capture(&self, req: &CaptureRequest) -> Result<CaptureStatus, ClientError> {
        self.call(self.http.post(self.url("/images")).json(req)).await
    }

    /// `GET /images/{id}`.
    pub async fn image_status(&self, id: &str) -> Result<CaptureStatus, ClientError> {
        self.call(self.http.get(self.url(&format!("/images/{id}")))).await
    }

    /// `DELETE /images/{id}`.
    pub async fn image_delete(&self, id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(self.http.delete(self.url(&format!("/images/{id}")))).await?;
        Ok(())
    }
}
