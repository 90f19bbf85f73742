//! Placement of VM slivers onto hosts: a pure function, unit-tested without agents.
//!
//! Bound nodes (a `component_id` naming a host) go to that host; the others go, largest first,
//! to the host with the most free memory that fits them (spreading load, which also exercises
//! the cross-host tunnels). All-or-nothing: any node that does not fit fails the whole request.
//!
//! The arithmetic is checked: a request is range-checked before it gets here
//! (`aggregate::allocate`), but a size that does not fit in the room's `i64` never fits, and
//! taking room never wraps, whatever the caller passes.

/// Room left on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoom {
    /// Host (agent) name.
    pub name: String,
    /// vCPUs that may still be promised.
    pub vcpus_free: i64,
    /// MiB of RAM that may still be promised.
    pub memory_free: i64,
}

/// One VM to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRequest {
    /// Node `client_id`.
    pub client_id: String,
    /// Host it is bound to, if any.
    pub bound_host: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
}

/// Why a request cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// A bound node names a host we do not have.
    #[error("Node {client_id}: no host {host} at this aggregate")]
    UnknownHost {
        /// Node.
        client_id: String,
        /// Requested host.
        host: String,
    },
    /// No host has room for a node.
    #[error("Node {client_id}: no host has {vcpus} vCPUs and {memory_mib} MiB free")]
    NoRoom {
        /// Node.
        client_id: String,
        /// vCPUs asked.
        vcpus: u32,
        /// MiB asked.
        memory_mib: u64,
    },
}

/// `vm`'s memory as a room amount; `None` if it is larger than any room can be.
fn memory_of(vm: &VmRequest) -> Option<i64> {
    i64::try_from(vm.memory_mib).ok()
}

fn fits(h: &HostRoom, vm: &VmRequest) -> bool {
    h.vcpus_free >= i64::from(vm.vcpus) && memory_of(vm).is_some_and(|m| h.memory_free >= m)
}

/// Takes `vm`'s room from `h`; only called after [`fits`], so both stay non-negative (and
/// saturating keeps that true even if they were not).
fn take(h: &mut HostRoom, vm: &VmRequest) {
    h.vcpus_free = h.vcpus_free.saturating_sub(i64::from(vm.vcpus));
    h.memory_free = h.memory_free.saturating_sub(memory_of(vm).unwrap_or(i64::MAX));
}

/// Chooses a host for every VM; the result is in the order of `vms`.
pub fn place(hosts: &[HostRoom], vms: &[VmRequest]) -> Result<Vec<String>, PlacementError> {
    let mut room: Vec<HostRoom> = hosts.to_vec();
    let mut out: Vec<Option<String>> = vec![None; vms.len()];
    // Bound nodes first: they have no choice, so they must not lose their host to others.
    for (i, vm) in vms.iter().enumerate() {
        let Some(want) = &vm.bound_host else { continue };
        let h = room
            .iter_mut()
            .find(|h| &h.name == want)
            .ok_or_else(|| PlacementError::UnknownHost { client_id: vm.client_id.clone(), host: want.clone() })?;
        if !fits(h, vm) {
            return Err(no_room(vm));
        }
        take(h, vm);
        out[i] = Some(h.name.clone());
    }
    let mut order: Vec<usize> = (0..vms.len()).filter(|&i| vms[i].bound_host.is_none()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(vms[i].memory_mib));
    for i in order {
        let vm = &vms[i];
        let best = room
            .iter_mut()
            .filter(|h| fits(h, vm))
            .max_by_key(|h| (h.memory_free, std::cmp::Reverse(h.name.clone())))
            .ok_or_else(|| no_room(vm))?;
        take(best, vm);
        out[i] = Some(best.name.clone());
    }
    Ok(out.into_iter().map(Option::unwrap_or_default).collect())
}

fn no_room(vm: &VmRequest) -> PlacementError {
    PlacementError::NoRoom { client_id: vm.client_id.clone(), vcpus: vm.vcpus, memory_mib: vm.memory_mib }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, vcpus: i64, mem: i64) -> HostRoom {
        HostRoom { name: name.into(), vcpus_free: vcpus, memory_free: mem }
    }

    fn vm(id: &str, bound: Option<&str>, mem: u64) -> VmRequest {
        VmRequest { client_id: id.into(), bound_host: bound.map(str::to_string), vcpus: 1, memory_mib: mem }
    }

    #[test]
    fn spreads_unbound_nodes() {
        let hosts = [host("h1", 8, 1024), host("h2", 8, 1024)];
        let got = place(&hosts, &[vm("a", None, 256), vm("b", None, 256), vm("c", None, 256)]).unwrap();
        assert_eq!(got, ["h1", "h2", "h1"]);
    }

    #[test]
    fn bound_nodes_go_to_their_host() {
        let hosts = [host("h1", 8, 1024), host("h2", 8, 1024)];
        let got = place(&hosts, &[vm("a", Some("h2"), 256), vm("b", Some("h2"), 256)]).unwrap();
        assert_eq!(got, ["h2", "h2"]);
    }

    #[test]
    fn rejects_unknown_host_and_overflow() {
        let hosts = [host("h1", 1, 512)];
        assert!(matches!(place(&hosts, &[vm("a", Some("nope"), 1)]), Err(PlacementError::UnknownHost { .. })));
        assert!(matches!(place(&hosts, &[vm("a", None, 256), vm("b", None, 256)]), Err(PlacementError::NoRoom { .. })));
        assert!(matches!(place(&hosts, &[vm("a", None, 1024)]), Err(PlacementError::NoRoom { .. })));
    }

    #[test]
    fn sizes_beyond_i64_never_fit_and_never_wrap() {
        // `as i64` made 2^63 MiB negative: it "fit" everywhere and wrapped the room.
        let hosts = [host("h1", 8, 1024)];
        for mem in [1u64 << 63, u64::MAX, i64::MAX as u64] {
            assert!(matches!(place(&hosts, &[vm("a", None, mem)]), Err(PlacementError::NoRoom { .. })), "{mem}");
            assert!(matches!(place(&hosts, &[vm("a", Some("h1"), mem)]), Err(PlacementError::NoRoom { .. })));
        }
        // Nothing was taken: a normal VM still fits alongside.
        assert_eq!(place(&hosts, &[vm("a", None, 1024)]).unwrap(), ["h1"]);
        // A full host next to an empty one: no overflow in the comparison either.
        let hosts = [host("h1", i64::MAX, i64::MAX), host("h2", 0, i64::MIN)];
        assert_eq!(place(&hosts, &[vm("a", None, i64::MAX as u64)]).unwrap(), ["h1"]);
    }

    #[test]
    fn bound_nodes_keep_their_room() {
        // The unbound big VM must not take h1's room needed by the bound one.
        let hosts = [host("h1", 8, 600), host("h2", 8, 500)];
        let got = place(&hosts, &[vm("big", None, 500), vm("pin", Some("h1"), 500)]).unwrap();
        assert_eq!(got, ["h2", "h1"]);
    }
}
