//! The AM's view of its agents: one mTLS client per host, and host facts for placement.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vnsnap_proto::client::{AgentClient, TlsFiles};
use vnsnap_proto::{DomainSpec, HostInfo};

use crate::config::Config;
use crate::error::AmError;

/// How long a fetched [`HostInfo`] is reused (advertisements are polled often).
const HOST_INFO_TTL: Duration = Duration::from_secs(2);

/// All agents of the aggregate.
#[derive(Debug)]
pub struct Agents {
    clients: BTreeMap<String, AgentClient>,
    cache: Mutex<BTreeMap<String, (Instant, HostInfo)>>,
}

impl Agents {
    /// Clients for every agent of the configuration.
    pub fn new(cfg: &Config) -> Result<Agents, AmError> {
        let tls = TlsFiles { ca: &cfg.cluster_tls.ca, cert: &cfg.cluster_tls.cert, key: &cfg.cluster_tls.key };
        let mut clients = BTreeMap::new();
        for a in &cfg.agents {
            clients.insert(a.name.clone(), AgentClient::new(&a.address, &tls)?);
        }
        Ok(Agents { clients, cache: Mutex::new(BTreeMap::new()) })
    }

    /// Host names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }

    /// The client of a host.
    pub fn client(&self, host: &str) -> Result<&AgentClient, AmError> {
        self.clients.get(host).ok_or_else(|| AmError::Internal(format!("no agent for host {host}")))
    }

    /// Facts of one host (cached for a short time).
    pub async fn host(&self, host: &str) -> Result<HostInfo, AmError> {
        if let Ok(c) = self.cache.lock() {
            if let Some((at, info)) = c.get(host) {
                if at.elapsed() < HOST_INFO_TTL {
                    return Ok(info.clone());
                }
            }
        }
        let info = self.client(host)?.host().await?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(host.to_string(), (Instant::now(), info.clone()));
        }
        Ok(info)
    }

    /// Facts of every host, fetched in parallel; unreachable hosts are left out.
    pub async fn hosts(&self) -> BTreeMap<String, HostInfo> {
        let mut set = tokio::task::JoinSet::new();
        for name in self.clients.keys() {
            let name = name.clone();
            let client = self.clients[&name].clone();
            let cached = self
                .cache
                .lock()
                .ok()
                .and_then(|c| c.get(&name).cloned())
                .filter(|(at, _)| at.elapsed() < HOST_INFO_TTL);
            set.spawn(async move {
                match cached {
                    Some((_, info)) => (name, Ok(info)),
                    None => (name, client.host().await),
                }
            });
        }
        let mut out = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok((name, Ok(info))) => {
                    if let Ok(mut c) = self.cache.lock() {
                        c.insert(name.clone(), (Instant::now(), info.clone()));
                    }
                    out.insert(name, info);
                }
                Ok((name, Err(e))) => tracing::warn!(host = %name, error = %e, "agent unreachable"),
                Err(e) => tracing::warn!(error = %e, "host query task failed"),
            }
        }
        out
    }

    /// Forgets cached host facts (after defining or destroying domains).
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Defines a domain; an existing domain of the same name (a retry) is replaced.
    pub async fn define(&self, host: &str, spec: &DomainSpec) -> Result<(), AmError> {
        let c = self.client(host)?;
        match c.define(spec).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Some(vnsnap_proto::ErrorKind::Conflict) => {
                let _ = c.destroy(&spec.name).await;
                c.define(spec).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Destroys a domain; a domain the agent does not know is already gone.
    pub async fn destroy(&self, host: &str, domain: &str) -> Result<(), AmError> {
        match self.client(host)?.destroy(domain).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(vnsnap_proto::ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
