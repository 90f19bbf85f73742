//! The daemon's TOML configuration. Unknown keys are errors (a typo is not silently ignored).
//!
//! See `am-plugin/examples/am.toml` for a complete example.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTPS server binds, e.g. `0.0.0.0:12369`.
    pub listen: String,
    /// Base URL clients use to reach us (for `geni_api_versions`); default `https://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Directory of the SQLite database.
    pub state_dir: PathBuf,
    /// URN authority of this AM, e.g. `vnsnap.example.org`.
    pub authority: String,
    /// Server certificate chain (PEM).
    pub server_cert: PathBuf,
    /// Server private key (PEM).
    pub server_key: PathBuf,
    /// GENI trust roots: PEM files, or directories of them.
    pub trust_roots: Vec<PathBuf>,
    /// Path of the xmlsec1 program (default: `xmlsec1` on `PATH`).
    #[serde(default)]
    pub xmlsec1: Option<PathBuf>,
    /// TLS files for talking to the agents (cluster CA, never the GENI roots).
    pub cluster_tls: ClusterTls,
    /// The agents (one per host).
    pub agents: Vec<AgentEntry>,
    /// Image catalog: image name → files on the hosts.
    pub images: BTreeMap<String, ImageEntry>,
    /// Image used when a request names none.
    pub default_image: String,
    /// Lifetimes and timeouts.
    #[serde(default)]
    pub lifetimes: Lifetimes,
    /// VM defaults and limits.
    #[serde(default)]
    pub vm: VmDefaults,
    /// Limits and timeouts of the HTTPS server (work done before a call is authorised).
    #[serde(default)]
    pub server: ServerLimits,
    /// Optional AM API extensions this AM offers.
    #[serde(default)]
    pub extensions: Extensions,
}

/// Optional AM API extensions. Switching one off removes it from GetVersion and the
/// advertisement, and its calls answer UNSUPPORTED, as at an aggregate that never had it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Extensions {
    /// The slice snapshot extension (`vnsnap_snapshot`/`vnsnap_restore`, `ListSnapshots`,
    /// `DescribeSnapshot`, `DeleteSnapshot`); default on.
    pub snapshot: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions { snapshot: true }
    }
}

/// Cluster TLS files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// CA that signed the agents' certificates.
    pub ca: PathBuf,
    /// The AM's client certificate.
    pub cert: PathBuf,
    /// The AM's client key.
    pub key: PathBuf,
}

/// One agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// Host name; becomes the node's component name.
    pub name: String,
    /// `host:port` of the agent API.
    pub address: String,
}

/// One disk image of the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// Kernel path on the hosts.
    pub kernel: String,
    /// Initrd path on the hosts.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Base disk path on the hosts (optional).
    #[serde(default)]
    pub disk: Option<String>,
    /// Extra kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// `os` for the advertisement.
    #[serde(default)]
    pub os: Option<String>,
    /// `version` for the advertisement.
    #[serde(default)]
    pub version: Option<String>,
    /// `description` for the advertisement.
    #[serde(default)]
    pub description: Option<String>,
}

/// Lifetimes (seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifetimes {
    /// Expiry given to provisioned slivers when the client asks for none.
    pub default_secs: i64,
    /// Longest lifetime granted from now.
    pub max_secs: i64,
    /// How long an allocated (not provisioned) sliver lives.
    pub allocation_timeout_secs: i64,
    /// How often the expiry task runs.
    pub expiry_check_secs: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            default_secs: 24 * 3600,
            max_secs: 14 * 24 * 3600,
            allocation_timeout_secs: 600,
            expiry_check_secs: 5,
        }
    }
}

/// VM sizing defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmDefaults {
    /// vCPUs when `emulab:xen cores` is absent.
    pub vcpus: u32,
    /// RAM (MiB) when `emulab:xen ram` is absent.
    pub memory_mib: u64,
    /// How many vCPUs may be promised per host vCPU.
    pub vcpu_overcommit: u32,
}

impl Default for VmDefaults {
    fn default() -> Self {
        VmDefaults { vcpus: 1, memory_mib: 256, vcpu_overcommit: 4 }
    }
}

/// Limits of the HTTPS server. Every client with any certificate gets this far before its
/// credentials are looked at, so these bound what an unauthenticated client can cost.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Largest request body (bytes). The largest real call is an Allocate carrying a request
    /// RSpec and a few credentials: a 200-node RSpec is about 200 KiB and a credential 10-20 KiB,
    /// so 4 MiB leaves more than ten times that.
    pub max_body_bytes: usize,
    /// Bytes of request bodies buffered at once over all connections; a request that would pass
    /// it is refused (503) instead of waiting.
    pub body_memory_bytes: usize,
    /// Time a client has to send a complete request head, also on an idle kept-alive connection
    /// (milliseconds).
    pub header_timeout_ms: u64,
    /// Time a client has to send a complete request body once its head is in (milliseconds).
    pub body_timeout_ms: u64,
    /// Connections open at once over all clients; more are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one client IP address; more are closed at accept. The
    /// Portal calls for all its users from one address, and `vnsnap-testbed bench am` runs 64
    /// clients from one: the default leaves room for both.
    pub max_connections_per_ip: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_body_bytes: 4 << 20,
            body_memory_bytes: 128 << 20,
            header_timeout_ms: 15_000,
            body_timeout_ms: 30_000,
            max_connections: 1024,
            max_connections_per_ip: 128,
        }
    }
}

impl ServerLimits {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("server.{m}")));
        if self.max_body_bytes == 0 || self.max_body_bytes > self.body_memory_bytes {
            return bad("max_body_bytes must be at least 1 and at most body_memory_bytes");
        }
        // A week is far past any sane value; the bound keeps Duration arithmetic safe.
        const MAX_MS: u64 = 7 * 24 * 3600 * 1000;
        if !(1..=MAX_MS).contains(&self.header_timeout_ms) || !(1..=MAX_MS).contains(&self.body_timeout_ms) {
            return bad("header_timeout_ms and body_timeout_ms must be between 1 and 604800000");
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return bad("max_connections and max_connections_per_ip must be at least 1");
        }
        Ok(())
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("Reading {0}")]
    Read(String, #[source] std::io::Error),
    /// The file is not valid configuration.
    #[error("Parsing {0}")]
    Parse(String, #[source] toml::de::Error),
    /// A value is inconsistent.
    #[error("Invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str, what: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(what.into(), e))?;
        if !c.images.contains_key(&c.default_image) {
            return Err(ConfigError::Invalid(format!("default_image {:?} is not in [images]", c.default_image)));
        }
        for a in &c.agents {
            if !vnsnap_proto::valid_name(&a.name) {
                return Err(ConfigError::Invalid(format!("agent name {:?}", a.name)));
            }
        }
        if c.lifetimes.max_secs < c.lifetimes.default_secs {
            return Err(ConfigError::Invalid("lifetimes.max_secs < default_secs".into()));
        }
        c.server.check()?;
        Ok(c)
    }

    /// `https://host:port` clients reach us at.
    pub fn base_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("https://{}", self.listen)).trim_end_matches('/').to_string()
    }

    /// The AM's own URN (`...+authority+cm`).
    pub fn am_urn(&self) -> String {
        format!("urn:publicid:IDN+{}+authority+cm", self.authority)
    }

    /// URN of a host (node).
    pub fn node_urn(&self, host: &str) -> String {
        format!("urn:publicid:IDN+{}+node+{}", self.authority, host)
    }

    /// URN of an image of the catalog.
    pub fn image_urn(&self, name: &str) -> String {
        format!("urn:publicid:IDN+{}+image+vnsnap:{}", self.authority, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/am.toml");

    #[test]
    fn example_config_parses() {
        let c = Config::parse(EXAMPLE, "example").unwrap();
        assert_eq!(c.agents.len(), 2);
        assert!(c.am_urn().ends_with("+authority+cm"));
    }

    #[test]
    fn server_limits_default_and_bounds() {
        let c = Config::parse(EXAMPLE, "example").unwrap();
        // A stalled head or body is closed within 30 s by default.
        assert!(c.server.header_timeout_ms <= 30_000 && c.server.body_timeout_ms <= 30_000);
        assert!(c.server.max_body_bytes <= 8 << 20);
        let set = format!("{EXAMPLE}\n[server]\nmax_body_bytes = 1000\nbody_timeout_ms = 500\n");
        let c = Config::parse(&set, "x").unwrap();
        assert_eq!((c.server.max_body_bytes, c.server.body_timeout_ms), (1000, 500));
        assert_eq!(c.server.header_timeout_ms, ServerLimits::default().header_timeout_ms);
        for bad in ["max_body_bytes = 0", "header_timeout_ms = 0", "max_connections_per_ip = 0"] {
            let t = format!("{EXAMPLE}\n[server]\n{bad}\n");
            assert!(matches!(Config::parse(&t, "x"), Err(ConfigError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn rejects_unknown_keys() {
        let bad = format!("{EXAMPLE}\nbogus = 1\n");
        assert!(matches!(Config::parse(&bad, "x"), Err(ConfigError::Parse(..))));
    }
}
