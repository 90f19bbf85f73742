//! Document-level rules: identifiers, references and the attributes each kind requires.
//!
//! The same checks serve the reader (with byte offsets of each element, so problems get a
//! line and column) and [`RSpec::validate`] for models built in code (no positions). The
//! `strict` flag adds the rules that only matter for writing schema-valid output, such as the
//! manifest schema's required `vlantag`, which real manifests from other tools sometimes lack.

use std::collections::{HashMap, HashSet};

use crate::error::{Problem, ProblemKind};
use crate::model::{RSpec, RSpecType};

/// Byte offsets of the elements the checks point at, recorded by the reader.
#[derive(Debug, Default)]
/// Flat lists (no allocation per node): `node_first_interface[n]` is the index in
/// `interfaces` of node `n`'s first interface, and likewise for links and their refs.
pub(crate) struct Offsets {
    pub(crate) nodes: Vec<usize>,
    pub(crate) node_first_interface: Vec<usize>,
    pub(crate) interfaces: Vec<usize>,
    pub(crate) links: Vec<usize>,
    pub(crate) link_first_ref: Vec<usize>,
    pub(crate) refs: Vec<usize>,
}

impl Offsets {
    fn node(&self, i: usize) -> Option<usize> {
        self.nodes.get(i).copied()
    }
    fn interface(&self, n: usize, i: usize) -> Option<usize> {
        let first = *self.node_first_interface.get(n)?;
        self.interfaces.get(first + i).copied()
    }
    fn link(&self, i: usize) -> Option<usize> {
        self.links.get(i).copied()
    }
    fn iref(&self, l: usize, r: usize) -> Option<usize> {
        let first = *self.link_first_ref.get(l)?;
        self.refs.get(first + r).copied()
    }
}

type Report<'a> = dyn FnMut(Option<usize>, ProblemKind, String) + 'a;

/// Runs every document-level check, reporting each problem through `report`. `ids` adds the
/// identifier and reference rules of requests: `client_id`s are unique, every
/// `interface_ref` names an interface of the document, every link has an `interface_ref`.
/// The schemas require none of them, and real manifests and advertisements break them (links
/// listed by their end points' component ids only, references to other aggregates'
/// interfaces).
pub(crate) fn check(rspec: &RSpec, offsets: Option<&Offsets>, strict: bool, ids: bool, report: &mut Report<'_>) {
    let at = |f: &dyn Fn(&Offsets) -> Option<usize>| offsets.and_then(f);
    let ad = rspec.rspec_type == RSpecType::Advertisement;
    let kind = rspec.rspec_type.as_str();
    let missing = |report: &mut Report<'_>, off, what: String| {
        report(off, ProblemKind::MissingAttribute, format!("{what} (required in a {kind})"))
    };

    // client_ids of nodes, interfaces and links share one space: the manifest correlates
    // any of them back to the request by this id alone.
    let mut seen: HashMap<&str, &'static str> = HashMap::new();
    let mut interface_ids: HashSet<&str> = HashSet::new();

    for (ni, node) in rspec.nodes.iter().enumerate() {
        let off = at(&|o| o.node(ni));
        if ad {
            if node.component_id.is_none() {
                missing(report, off, "<node> lacks component_id".into());
            }
            if node.component_manager_id.is_none() {
                missing(report, off, "<node> lacks component_manager_id".into());
            }
            if node.exclusive.is_none() {
                missing(report, off, "<node> lacks exclusive".into());
            }
        } else {
            match &node.client_id {
                Some(id) if ids => dup(&mut seen, report, off, id, "node"),
                Some(_) => {}
                None => missing(report, off, "<node> lacks client_id".into()),
            }
        }
        if strict {
            strict_node(rspec.rspec_type, node, off, report);
            if let Some(sv) = &node.services {
                strict_services(rspec.rspec_type, sv, off, report);
            }
        }
        for (ii, iface) in node.interfaces.iter().enumerate() {
            let off = at(&|o| o.interface(ni, ii));
            if let Some(id) = &iface.client_id {
                interface_ids.insert(id);
                if ids {
                    dup(&mut seen, report, off, id, "interface");
                }
            } else if !ad {
                missing(report, off, "<interface> lacks client_id".into());
            }
            if ad && iface.component_id.is_none() {
                missing(report, off, "<interface> lacks component_id".into());
            }
            if strict
                && rspec.rspec_type == RSpecType::Request
                && (iface.sliver_id.is_some() || iface.mac_address.is_some())
            {
                report(
                    off,
                    ProblemKind::BadValue,
                    "A request <interface> may not carry sliver_id or mac_address".into(),
                );
            }
        }
    }

    for (li, link) in rspec.links.iter().enumerate() {
        let off = at(&|o| o.link(li));
        let name = link.client_id.as_deref().or(link.component_id.as_deref()).unwrap_or("?");
        if ad {
            if link.component_id.is_none() {
                missing(report, off, "<link> lacks component_id".into());
            }
        } else {
            match &link.client_id {
                Some(id) if ids => dup(&mut seen, report, off, id, "link"),
                Some(_) => {}
                None => missing(report, off, "<link> lacks client_id".into()),
            }
        }
        if ids && link.interface_refs.is_empty() {
            report(off, ProblemKind::LinkWithoutInterfaces, format!("Link {name:?} has no interface_ref"));
        }
        if strict {
            // Present is enough: the schema leaves its value untyped.
            if rspec.rspec_type == RSpecType::Manifest && link.vlantag.is_none() {
                missing(report, off, format!("Link {name:?} lacks vlantag"));
            }
            if rspec.rspec_type == RSpecType::Request && (link.vlantag.is_some() || link.sliver_id.is_some()) {
                report(off, ProblemKind::BadValue, format!("Request link {name:?} may not carry vlantag or sliver_id"));
            }
        }
        for (ri, r) in link.interface_refs.iter().enumerate() {
            let off = at(&|o| o.iref(li, ri));
            if ad {
                // Advertisement links may end at other aggregates' interfaces (stitching),
                // so their references are not resolved within the document.
                if r.component_id.is_none() {
                    missing(report, off, "<interface_ref> lacks component_id".into());
                }
                continue;
            }
            match &r.client_id {
                None => missing(report, off, "<interface_ref> lacks client_id".into()),
                Some(id) if ids && !interface_ids.contains(id.as_str()) => report(
                    off,
                    ProblemKind::DanglingInterfaceRef,
                    format!("Link {name:?} refers to interface {id:?}, which no node declares"),
                ),
                Some(_) => {}
            }
        }
    }

    for (what, v) in [("generated", &rspec.generated), ("expires", &rspec.expires)] {
        if let Some(v) = v {
            if strict && !crate::read::is_datetime(v.trim()) {
                report(None, ProblemKind::BadValue, format!("{what}: {v:?} is not an xs:dateTime"));
            }
        }
    }
}

fn dup<'a>(
    seen: &mut HashMap<&'a str, &'static str>,
    report: &mut Report<'_>,
    off: Option<usize>,
    id: &'a str,
    what: &'static str,
) {
    if let Some(first) = seen.insert(id, what) {
        report(
            off,
            ProblemKind::DuplicateClientId,
            format!("Duplicate client_id {id:?} on a {what} (already used by a {first})"),
        );
    }
}

/// Attributes and children the schema of one document kind does not allow on a node.
fn strict_node(t: RSpecType, node: &crate::model::Node, off: Option<usize>, report: &mut Report<'_>) {
    let name = node.client_id.as_deref().or(node.component_id.as_deref()).unwrap_or("?");
    let mut bad = |what: &str| {
        report(off, ProblemKind::BadValue, format!("Node {name:?}: {what} is not allowed in a {}", t.as_str()))
    };
    match t {
        RSpecType::Request => {
            if node.sliver_id.is_some() {
                bad("sliver_id");
            }
            if node.host.is_some() {
                bad("<host>");
            }
            if node.available.is_some() {
                bad("<available>");
            }
        }
        RSpecType::Manifest => {
            if node.available.is_some() {
                bad("<available>");
            }
        }
        RSpecType::Advertisement => {
            if node.client_id.is_some() {
                bad("client_id");
            }
            if node.sliver_id.is_some() {
                bad("sliver_id");
            }
            if node.host.is_some() {
                bad("<host>");
            }
        }
    }
}

/// Install and execute entries differ between advertisements and the other kinds.
fn strict_services(t: RSpecType, sv: &crate::model::Services, off: Option<usize>, report: &mut Report<'_>) {
    let ad = t == RSpecType::Advertisement;
    for i in &sv.installs {
        if ad && i.file_type.is_none() {
            report(off, ProblemKind::MissingAttribute, "An advertisement <install> needs file_type".into());
        }
        if ad && !(i.url.is_empty() && i.install_path.is_empty()) {
            report(off, ProblemKind::BadValue, "An advertisement <install> has no url or install_path".into());
        }
        if !ad && i.file_type.is_some() {
            report(off, ProblemKind::BadValue, format!("A {} <install> has no file_type", t.as_str()));
        }
    }
    for e in &sv.executes {
        if ad && !e.command.is_empty() {
            report(off, ProblemKind::BadValue, "An advertisement <execute> has no command".into());
        }
    }
}

impl RSpec {
    /// Checks a model against the rules of its document kind, including those needed for
    /// [`RSpec::to_xml`] to produce schema-valid output (a manifest link needs a `vlantag`,
    /// `generated`/`expires` must be `xs:dateTime`, kind-specific attributes). Returns every
    /// problem found; problems carry no position. The identifier and reference rules
    /// (unique `client_id`s, `interface_ref`s naming declared interfaces, links with end
    /// points) are checked for requests only, as [`crate::parse`] does.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let ids = self.rspec_type == RSpecType::Request;
        check(self, None, true, ids, &mut |_, kind, message| problems.push(Problem { position: None, kind, message }));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
