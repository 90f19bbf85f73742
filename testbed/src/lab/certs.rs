//! The cluster CA of a lab: it signs the agents' server certificates and the client
//! certificate the AM (and the testbed) present to agents. Not a GENI authority.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// PEM files of one identity signed by the cluster CA.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Certificate.
    pub cert: PathBuf,
    /// Private key (PKCS#8).
    pub key: PathBuf,
}

/// A cluster CA kept as PEM files in a directory.
pub struct ClusterCa {
    /// CA certificate path.
    pub ca: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("ca", &self.ca).finish()
    }
}

impl ClusterCa {
    /// Creates a new CA in `dir` (`cluster-ca.pem`).
    pub fn create(dir: &Path) -> anyhow::Result<ClusterCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "vnsnap cluster CA");
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca = dir.join("cluster-ca.pem");
        std::fs::write(&ca, cert.pem())?;
        std::fs::write(dir.join("cluster-ca.key"), key.serialize_pem())?;
        Ok(ClusterCa { ca, cert, key })
    }

    /// Issues a certificate for `cn` valid for `names` (DNS names or IP addresses),
    /// written as `<stem>.pem` / `<stem>.key` in `dir`.
    pub fn issue(&self, dir: &Path, stem: &str, cn: &str, names: &[String]) -> anyhow::Result<Identity> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let id = Identity { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) };
        std::fs::write(&id.cert, cert.pem())?;
        std::fs::write(&id.key, key.serialize_pem())?;
        Ok(id)
    }
}
