//! AM methods and the SFA privileges each one needs (GENI-AM-API.md §2 table and §3.3).

/// An AM API call, as far as authorization cares.
///
/// v2 and v3 methods that do the same thing share the privilege they need; extension methods
/// (snapshots, images) are mapped onto the closest standard privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GetVersion: no credential needed.
    GetVersion,
    /// ListResources (v3, or v2 without `geni_slice_urn`): any valid credential owned by the
    /// caller; with a target (v2 `geni_slice_urn`) a slice credential with `getsliceresources`.
    ListResources,
    /// Describe (v3).
    Describe,
    /// Allocate (v3).
    Allocate,
    /// Provision (v3).
    Provision,
    /// PerformOperationalAction (v3), including the vnsnap snapshot/restore actions.
    PerformOperationalAction,
    /// Status (v3).
    Status,
    /// Renew (v3).
    Renew,
    /// Delete (v3).
    Delete,
    /// Shutdown (v2 and v3).
    Shutdown,
    /// CreateSliver (v2).
    CreateSliver,
    /// SliverStatus (v2).
    SliverStatus,
    /// RenewSliver (v2).
    RenewSliver,
    /// DeleteSliver (v2).
    DeleteSliver,
    /// CreateImage (ProtoGENI extension, slice credential).
    CreateImage,
    /// ListImages (ProtoGENI extension, user credential, no target).
    ListImages,
    /// DeleteImage (ProtoGENI extension, user credential, no target).
    DeleteImage,
    /// ListSnapshots (vnsnap extension, slice credential).
    ListSnapshots,
    /// DescribeSnapshot (vnsnap extension, slice credential).
    DescribeSnapshot,
    /// DeleteSnapshot (vnsnap extension, slice credential).
    DeleteSnapshot,
}

impl Method {
    /// Every method, for tables and tests.
    pub const ALL: [Method; 20] = [
        Method::GetVersion,
        Method::ListResources,
        Method::Describe,
        Method::Allocate,
        Method::Provision,
        Method::PerformOperationalAction,
        Method::Status,
        Method::Renew,
        Method::Delete,
        Method::Shutdown,
        Method::CreateSliver,
        Method::SliverStatus,
        Method::RenewSliver,
        Method::DeleteSliver,
        Method::CreateImage,
        Method::ListImages,
        Method::DeleteImage,
        Method::ListSnapshots,
        Method::DescribeSnapshot,
        Method::DeleteSnapshot,
    ];

    /// The XML-RPC method name.
    pub fn name(self) -> &'static str {
        match self {
            Method::GetVersion => "GetVersion",
            Method::ListResources => "ListResources",
            Method::Describe => "Describe",
            Method::Allocate => "Allocate",
            Method::Provision => "Provision",
            Method::PerformOperationalAction => "PerformOperationalAction",
            Method::Status => "Status",
            Method::Renew => "Renew",
            Method::Delete => "Delete",
            Method::Shutdown => "Shutdown",
            Method::CreateSliver => "CreateSliver",
            Method::SliverStatus => "SliverStatus",
            Method::RenewSliver => "RenewSliver",
            Method::DeleteSliver => "DeleteSliver",
            Method::CreateImage => "CreateImage",
            Method::ListImages => "ListImages",
            Method::DeleteImage => "DeleteImage",
            Method::ListSnapshots => "ListSnapshots",
            Method::DescribeSnapshot => "DescribeSnapshot",
            Method::DeleteSnapshot => "DeleteSnapshot",
        }
    }

    /// The method for an XML-RPC method name, if it is one we authorize.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the method needs a credential at all. Only GetVersion does not: ListResources
    /// with no valid credential is refused (GENI-AM-API.md §9).
    pub fn needs_credential(self) -> bool {
        self != Method::GetVersion
    }

    /// The privilege a credential must grant for this method, when the call acts on a slice
    /// (`has_target`). `None` means any valid credential owned by the caller will do.
    pub fn required_privilege(self, has_target: bool) -> Option<&'static str> {
        match self {
            Method::GetVersion | Method::ListImages | Method::DeleteImage => None,
            Method::ListResources => has_target.then_some("getsliceresources"),
            Method::Allocate
            | Method::Provision
            | Method::PerformOperationalAction
            | Method::CreateSliver
            | Method::CreateImage => Some("createsliver"),
            Method::Delete | Method::DeleteSliver | Method::DeleteSnapshot => Some("deleteslice"),
            Method::Describe
            | Method::Status
            | Method::SliverStatus
            | Method::ListSnapshots
            | Method::DescribeSnapshot => Some("getsliceresources"),
            Method::Renew | Method::RenewSliver => Some("renewsliver"),
            Method::Shutdown => Some("shutdown"),
        }
    }
}

/// Operations granted by the SFA role privileges (gcf `sfa/trust/rights.py`, GENI-AM-API.md §3.3).
fn role_operations(role: &str) -> &'static [&'static str] {
    match role {
        "embed" => &[
            "getticket",
            "redeemslice",
            "redeemticket",
            "createslice",
            "createsliver",
            "renewsliver",
            "deleteslice",
            "deletesliver",
            "updateslice",
            "sliverstatus",
            "getsliceresources",
            "shutdown",
        ],
        "control" => &[
            "updateslice",
            "createslice",
            "createsliver",
            "renewsliver",
            "sliverstatus",
            "stopslice",
            "startslice",
            "deleteslice",
            "deletesliver",
            "resetslice",
            "getsliceresources",
            "getgids",
        ],
        "info" => &["listslices", "listnodes", "getpolicy"],
        _ => &[],
    }
}

/// Whether holding privilege `held` allows `needed` (an operation or another privilege name).
/// `*` allows everything; a role allows its operations; any name allows itself.
pub(crate) fn privilege_grants(held: &str, needed: &str) -> bool {
    held == "*" || held.eq_ignore_ascii_case(needed) || role_operations(held).contains(&needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_grants_everything() {
        for m in Method::ALL {
            if let Some(p) = m.required_privilege(true) {
                assert!(privilege_grants("*", p));
            }
        }
    }

    #[test]
    fn roles_grant_their_operations_only() {
        assert!(privilege_grants("control", "createsliver"));
        assert!(!privilege_grants("info", "createsliver"));
        assert!(!privilege_grants("getsliceresources", "createsliver"));
    }

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
        }
    }
}
