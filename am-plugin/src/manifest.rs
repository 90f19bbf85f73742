//! Manifests: the stored request RSpecs annotated with what the AM granted.
//!
//! Starting from the request keeps whatever the client sent that we do not interpret
//! (extensions, services, foreign nodes), as the AM API asks.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use vnsnap_rspec::{RSpec, RSpecType, UserKey};

use crate::aggregate::Am;
use crate::error::AmError;
use crate::state::{rfc3339, LinkRow, Sliver};

/// A `geni_users` entry: a user URN and its SSH keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeniUser {
    /// User URN.
    pub urn: String,
    /// SSH public keys.
    pub keys: Vec<String>,
}

impl GeniUser {
    /// The login name: the URN's last field, lower case, shell-safe.
    pub fn login(&self) -> String {
        self.urn
            .rsplit('+')
            .next()
            .unwrap_or("user")
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    }
}

impl Am {
    /// The manifest of the given slivers (and the live links of their slice).
    pub fn manifest(&self, slice: &str, slivers: &[Sliver]) -> Result<String, AmError> {
        let links = self.db.slice_links(slice)?;
        let users: Vec<GeniUser> =
            self.db.slice(slice)?.and_then(|s| serde_json::from_str(&s.users).ok()).unwrap_or_default();
        let mut by_alloc: BTreeMap<i64, Vec<&Sliver>> = BTreeMap::new();
        for s in slivers {
            by_alloc.entry(s.allocation).or_default().push(s);
        }
        let mut m = RSpec::new(RSpecType::Manifest);
        m.generated = Some(rfc3339(Utc::now()).into());
        m.generated_by = Some(format!("vnsnap-am {}", env!("CARGO_PKG_VERSION")).into());
        m.expires = slivers.iter().map(|s| s.expires).min().map(rfc3339).map(Into::into);
        for (alloc, ss) in by_alloc {
            let Some(text) = self.db.allocation_rspec(alloc)? else {
                continue;
            };
            let req = vnsnap_rspec::parse(&text)
                .map_err(|e| AmError::Internal(format!("stored request {alloc} unreadable: {e}")))?;
            let alloc_links: Vec<&LinkRow> = links.iter().filter(|l| l.allocation == alloc).collect();
            self.annotate(&mut m, req, &ss, &alloc_links, &users);
        }
        Ok(m.to_xml())
    }

    fn annotate(&self, m: &mut RSpec, req: RSpec, slivers: &[&Sliver], links: &[&LinkRow], users: &[GeniUser]) {
        let by_client: HashMap<&str, &Sliver> = slivers.iter().map(|s| (s.client_id.as_str(), *s)).collect();
        let mut iface_sliver: HashMap<String, String> = HashMap::new();
        for mut node in req.nodes {
            if !self.is_ours(&node) {
                m.nodes.push(node);
                continue;
            }
            let Some(s) = node.client_id.as_deref().and_then(|c| by_client.get(c)) else {
                continue;
            };
            node.sliver_id = Some(s.urn.as_str().into());
            node.component_id = Some(self.cfg.node_urn(&s.host).into());
            node.component_manager_id = Some(self.cfg.am_urn().into());
            node.component_name = Some(s.host.as_str().into());
            node.exclusive = Some(false);
            for iface in &mut node.interfaces {
                let cid = iface.client_id.clone().unwrap_or_default();
                if let Some(nic) = s.plan.nics.iter().find(|n| n.client_id == cid) {
                    iface.sliver_id = Some(nic.sliver_urn.as_str().into());
                    iface.mac_address = Some(nic.mac.as_str().into());
                    iface_sliver.insert(cid.to_string(), nic.sliver_urn.clone());
                }
            }
            if !users.is_empty() {
                let services = node.services.get_or_insert_with(Default::default);
                // No login element: the test guest has no reachable SSH port.
                for u in users {
                    services.users.push(UserKey {
                        login: u.login().into(),
                        user_urn: Some(u.urn.as_str().into()),
                        public_keys: u.keys.clone(),
                    });
                }
            }
            m.nodes.push(node);
        }
        for mut link in req.links {
            let cid = link.client_id.clone().unwrap_or_default();
            let Some(row) = links.iter().find(|l| l.client_id == cid) else {
                continue;
            };
            link.sliver_id = Some(row.urn.clone().into());
            link.vlantag = u16::try_from(row.segment).ok().map(|v| v.to_string().into());
            if !link.component_managers.iter().any(|c| c.eq_ignore_ascii_case(&self.cfg.am_urn())) {
                link.component_managers.push(self.cfg.am_urn().into());
            }
            for r in &mut link.interface_refs {
                if let Some(sid) = r.client_id.as_ref().and_then(|c| iface_sliver.get(c.as_str())) {
                    r.sliver_id = Some(sid.clone().into());
                }
            }
            m.links.push(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_is_urn_tail() {
        let u = GeniUser { urn: "urn:publicid:IDN+geni:gpo:gcf+user+Alice".into(), keys: vec![] };
        assert_eq!(u.login(), "alice");
    }
}
