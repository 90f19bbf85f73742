//! Manifests: the stored request RSpecs annotated with what the AM granted.
//!
//! Starting from the request keeps whatever the client sent that we do not interpret
//! (extensions, services, foreign nodes), as the AM API asks.
//!
//! A slice's manifest also lists the slice's snapshots at this aggregate in a
//! `<snapshots>` element of [`SNAPSHOT_NS`] (a child of `<rspec>`, which the GENI v3 manifest
//! schema opens to elements of other namespaces), so that stock tools, which have no verb
//! for `ListSnapshots`, show them: `omni describe` prints the manifest.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use vnsnap_rspec::{QName, RSpec, RSpecType, UserKey, XmlAttr, XmlChild, XmlElement};

use crate::aggregate::Am;
use crate::error::AmError;
use crate::snapshot::catalog::{self, Entry};
use crate::state::{rfc3339, LinkRow, Sliver};

/// The namespace of vnsnap's manifest extension (the slice's snapshots).
pub const SNAPSHOT_NS: &str = "urn:vnsnap:rspec:ext:snapshot:1";

/// `<snapshots>`: one `<snapshot urn name state created [error]/>` per snapshot of the slice
/// (any state), oldest first; empty if the slice has none. Attributes as in `ListSnapshots`.
pub fn snapshots_element(entries: &[Entry]) -> XmlElement {
    let mut list = XmlElement::new(QName::new(SNAPSHOT_NS, "snapshots"));
    for e in entries {
        let mut s = XmlElement::new(QName::new(SNAPSHOT_NS, "snapshot"));
        let attr = |k: &str, v: &str| XmlAttr::new(QName::local(k), v);
        s.attrs = vec![
            attr("urn", &e.urn),
            attr("name", &e.name),
            attr("state", e.state.as_str()),
            attr("created", &e.created),
        ];
        if !e.error.is_empty() {
            s.attrs.push(attr("error", &e.error));
        }
        list.children.push(XmlChild::Element(s));
    }
    list
}

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
    /// The manifest of the given slivers (and the live links of their slice), with the
    /// slice's snapshots ([`snapshots_element`]).
    pub fn manifest(&self, slice: &str, slivers: &[Sliver]) -> Result<String, AmError> {
        let mut m = self.manifest_rspec(slice, slivers)?;
        let entries = catalog::of_slice(&self.db.conn(), slice)?;
        m.extensions.push(snapshots_element(&entries));
        Ok(m.to_xml())
    }

    /// The manifest of the given slivers without the snapshot list: what a snapshot keeps
    /// of its slice.
    pub fn slice_manifest(&self, slice: &str, slivers: &[Sliver]) -> Result<String, AmError> {
        Ok(self.manifest_rspec(slice, slivers)?.to_xml())
    }

    fn manifest_rspec(&self, slice: &str, slivers: &[Sliver]) -> Result<RSpec, AmError> {
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
        Ok(m)
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

    fn entry(name: &str, state: catalog::EntryState, error: &str) -> Entry {
        Entry {
            id: format!("id-{name}"),
            urn: format!("urn:publicid:IDN+am.test+snapshot+s-{name}-0f8c2a4e"),
            slice_urn: "urn:publicid:IDN+ch.test+slice+s".into(),
            name: name.into(),
            owner: "urn:publicid:IDN+ch.test+user+alice".into(),
            state,
            created: "2026-12-06T21:00:00Z".into(),
            manifest: String::new(),
            bytes: 0,
            error: error.into(),
            hosts: Vec::new(),
        }
    }

    /// The manifest with the snapshot list stays valid against the GENI v3 manifest schema
    /// (with and without snapshots), and a reader finds the list where the docs say.
    #[test]
    fn snapshot_list_keeps_the_manifest_schema_valid() {
        let base = r#"<rspec xmlns="http://www.geni.net/resources/rspec/3" type="manifest"
            generated="2026-12-06T21:00:00Z" expires="2026-12-07T21:00:00Z">
          <node client_id="vm1" exclusive="false" component_manager_id="urn:publicid:IDN+am.test+authority+am"
                component_id="urn:publicid:IDN+am.test+node+host1" sliver_id="urn:publicid:IDN+am.test+sliver+1">
            <sliver_type name="emulab-xen"/></node></rspec>"#;
        let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rspec/tests/schemas/manifest-all.xsd");
        let dir = tempfile::tempdir().unwrap();
        let lists = [
            vec![],
            vec![
                entry("before", catalog::EntryState::Complete, ""),
                entry("broken", catalog::EntryState::Failed, "saver: No space left on device <&\"'>"),
                entry("now", catalog::EntryState::Pending, ""),
            ],
        ];
        for (i, entries) in lists.iter().enumerate() {
            let mut m = vnsnap_rspec::parse(base).unwrap();
            m.extensions.push(snapshots_element(entries));
            let xml = m.to_xml();
            assert!(
                xml.contains(&format!("xmlns:vnsnap=\"{SNAPSHOT_NS}\"")) && xml.contains("<vnsnap:snapshots"),
                "{xml}"
            );
            let f = dir.path().join(format!("m{i}.xml"));
            std::fs::write(&f, &xml).unwrap();
            let out = std::process::Command::new("xmllint")
                .args(["--noout", "--nonet", "--schema"])
                .arg(&schema)
                .arg(&f)
                .output()
                .expect("xmllint runs (apt-get install libxml2-utils)");
            assert!(out.status.success(), "{}\n{xml}", String::from_utf8_lossy(&out.stderr));
            // Read back: the list is a root extension in our namespace, attributes intact.
            let back = vnsnap_rspec::parse(&xml).unwrap();
            let list = back.extensions.iter().find(|e| e.name == QName::new(SNAPSHOT_NS, "snapshots")).unwrap();
            let got: Vec<(String, String, String)> = list
                .elements()
                .map(|s| {
                    let a = |k: &str| s.attr(&QName::local(k)).unwrap_or_default().to_string();
                    (a("name"), a("state"), a("error"))
                })
                .collect();
            let want: Vec<(String, String, String)> =
                entries.iter().map(|e| (e.name.clone(), e.state.as_str().into(), e.error.clone())).collect();
            assert_eq!(got, want);
            assert_eq!(back.nodes.len(), 1);
        }
    }

    #[test]
    fn login_is_urn_tail() {
        let u = GeniUser { urn: "urn:publicid:IDN+geni:gpo:gcf+user+Alice".into(), keys: vec![] };
        assert_eq!(u.login(), "alice");
    }
}
