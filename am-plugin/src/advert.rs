//! The advertisement RSpec: one node per host, the VM sliver types with the image catalog,
//! capacity, availability, and the opstate block of the VM sliver types.

use chrono::Utc;
use vnsnap_rspec::{
    Available, DiskImage, HardwareType, Node, Opstate, OpstateAction, OpstateState, OpstateWait, QName, RSpec,
    RSpecType, SliverType, XmlAttr, XmlElement, EMULAB_NS,
};

use crate::aggregate::allocate::{VM_TYPE, XEN_TYPE};
use crate::aggregate::Am;
use crate::error::AmError;
use crate::state::rfc3339;

fn action(name: &str, next: &str, description: &str) -> OpstateAction {
    OpstateAction { name: name.into(), next: next.into(), description: Some(description.into()) }
}

fn waits(ok: &str) -> Vec<OpstateWait> {
    vec![
        OpstateWait { wait_type: Some("geni_success".into()), next: ok.into(), description: None },
        OpstateWait { wait_type: Some("geni_failure".into()), next: "geni_failed".into(), description: None },
    ]
}

/// A snapshot or restore ends in `geni_ready` either way (a failure leaves the VMs running
/// and says why in `geni_error`).
fn snapshot_waits() -> Vec<OpstateWait> {
    vec![
        OpstateWait { wait_type: Some("geni_success".into()), next: "geni_ready".into(), description: None },
        OpstateWait {
            wait_type: Some("geni_failure".into()),
            next: "geni_ready".into(),
            description: Some("See geni_error".into()),
        },
    ]
}

fn state(name: &str, actions: Vec<OpstateAction>, waits: Vec<OpstateWait>, d: &str) -> OpstateState {
    OpstateState { name: name.into(), description: Some(d.into()), actions, waits }
}

/// The operational state machine of our VM sliver types (see `aggregate::action`).
pub fn opstate(am_urn: &str) -> Opstate {
    Opstate {
        aggregate_manager_id: am_urn.into(),
        start: "geni_notready".into(),
        sliver_types: vec![VM_TYPE.into(), XEN_TYPE.into()],
        states: vec![
            state(
                "geni_notready",
                vec![
                    action("geni_start", "geni_configuring", "Boot the VM"),
                    action("vnsnap_restore", "vnsnap_restoring", "Restore the whole slice to a snapshot"),
                ],
                vec![],
                "Defined, not running",
            ),
            state("geni_configuring", vec![], waits("geni_ready"), "Booting"),
            state(
                "geni_ready",
                vec![
                    action("geni_restart", "geni_configuring", "Reboot the VM"),
                    action("geni_stop", "geni_stopping", "Shut the VM down"),
                    action(
                        "geni_update_users",
                        "geni_ready",
                        "Replace the slice's users and SSH keys (option geni_users)",
                    ),
                    action(
                        "vnsnap_snapshot",
                        "vnsnap_snapshotting",
                        "Consistent live snapshot of the whole slice (VMs pause for milliseconds). \
                         Option vnsnap_snapshot_name (required, 1-64 of A-Z a-z 0-9 _ -).",
                    ),
                    action(
                        "vnsnap_restore",
                        "vnsnap_restoring",
                        "Restore the whole slice to a snapshot. Option vnsnap_snapshot_urn (required).",
                    ),
                ],
                vec![],
                "Running; the guest answers",
            ),
            state(
                "vnsnap_snapshotting",
                vec![],
                snapshot_waits(),
                "Slice snapshot in progress (VMs keep running); progress in geni_resource_status",
            ),
            state(
                "vnsnap_restoring",
                vec![],
                snapshot_waits(),
                "Slice restore in progress; progress in geni_resource_status",
            ),
            state(
                "vnsnap_imaging",
                vec![],
                snapshot_waits(),
                "CreateImage of this VM in progress (the VM keeps running); see ListImages",
            ),
            state("geni_stopping", vec![], waits("geni_notready"), "Shutting down"),
            state(
                "geni_failed",
                vec![
                    action("geni_start", "geni_configuring", "Boot the VM again"),
                    action("geni_restart", "geni_configuring", "Reboot the VM"),
                    action("vnsnap_restore", "vnsnap_restoring", "Restore the whole slice to a snapshot"),
                ],
                vec![],
                "The VM crashed or an agent call failed; see geni_error",
            ),
        ],
    }
}

/// The opstate block of an AM without the snapshot extension: no snapshot/restore actions
/// and none of their states.
fn without_snapshots(o: &mut Opstate) {
    o.states.retain(|s| !matches!(&*s.name, "vnsnap_snapshotting" | "vnsnap_restoring"));
    for s in &mut o.states {
        s.actions.retain(|a| !matches!(&*a.name, "vnsnap_snapshot" | "vnsnap_restore"));
    }
}

impl Am {
    /// The advertisement; with `available_only`, hosts without room are left out.
    pub async fn advertisement(&self, available_only: bool) -> Result<String, AmError> {
        let hosts = self.agents.hosts().await;
        let live = self.db.live_slivers()?;
        let images: Vec<DiskImage> = self
            .cfg
            .images
            .iter()
            .map(|(name, img)| DiskImage {
                name: self.cfg.image_urn(name).into(),
                os: img.os.as_deref().map(Into::into),
                version: img.version.as_deref().map(Into::into),
                description: img.description.as_deref().map(Into::into),
                default: (name == &self.cfg.default_image).then(|| "true".into()),
                ..Default::default()
            })
            .collect();
        // Public images made by CreateImage, on the node of the host that holds each.
        let user_images = crate::image::advertised(self)?;
        let mut ad = RSpec::new(RSpecType::Advertisement);
        let now = rfc3339(Utc::now());
        ad.generated = Some(now.clone().into());
        ad.expires = Some(now.into());
        for name in self.agents.names() {
            let info = hosts.get(name);
            let (used_v, used_m) = live
                .iter()
                .filter(|s| s.host == name)
                // Saturating: a stored size too large to add up makes the host full, not a panic.
                .fold((0u64, 0u64), |(v, m), s| {
                    (v.saturating_add(u64::from(s.plan.vcpus)), m.saturating_add(s.plan.memory_mib))
                });
            let (slots, free_mem) = match info {
                Some(i) => {
                    let total = u64::from(i.vcpus) * u64::from(self.cfg.vm.vcpu_overcommit);
                    (total.saturating_sub(used_v), i.memory_mib.saturating_sub(used_m))
                }
                None => (0, 0),
            };
            let available =
                info.is_some() && slots >= u64::from(self.cfg.vm.vcpus) && free_mem >= self.cfg.vm.memory_mib;
            if available_only && !available {
                continue;
            }
            let mut node_images = images.clone();
            node_images.extend(user_images.iter().filter(|(_, _, h)| h == name).map(|(urn, description, _)| {
                DiskImage { name: urn.into(), description: Some(description.into()), ..Default::default() }
            }));
            let mut node_type = XmlElement::new(QName::new(EMULAB_NS, "node_type"));
            node_type.attrs.push(XmlAttr::new(QName::local("type_slots"), slots.to_string()));
            node_type.attrs.push(XmlAttr::new(QName::local("static"), "true"));
            ad.nodes.push(Node {
                component_id: Some(self.cfg.node_urn(name).into()),
                component_manager_id: Some(self.cfg.am_urn().into()),
                component_name: Some(name.into()),
                exclusive: Some(false),
                sliver_types: [VM_TYPE, XEN_TYPE]
                    .iter()
                    .map(|t| SliverType { name: (*t).into(), disk_images: node_images.clone(), ..Default::default() })
                    .collect(),
                hardware_types: vec![HardwareType {
                    name: "pcvm".into(),
                    extensions: vec![node_type],
                    ext_attrs: vec![],
                }],
                available: Some(Available { now: available, ..Default::default() }),
                ..Default::default()
            });
        }
        let mut ops = opstate(&self.cfg.am_urn());
        if !self.cfg.extensions.snapshot {
            without_snapshots(&mut ops);
        }
        ad.opstates.push(ops);
        Ok(ad.to_xml())
    }
}
