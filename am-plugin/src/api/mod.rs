//! The AM API: one verb enum, one dispatch `match`, one place that builds return envelopes.

pub mod args;
pub mod v2;
pub mod v3;
pub mod version;

use std::sync::Arc;

use crate::aggregate::{Am, Caller};
use crate::error::{envelope, AmError};
use crate::xmlrpc::Value;
use args::Args;

/// Which AM API endpoint a call arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `/am/2.0`.
    V2,
    /// `/am/3.0`.
    V3,
}

impl ApiVersion {
    /// The endpoint for a request path.
    pub fn from_path(path: &str) -> Option<ApiVersion> {
        match path.trim_end_matches('/') {
            "/am/3.0" | "" => Some(ApiVersion::V3),
            "/am/2.0" => Some(ApiVersion::V2),
            _ => None,
        }
    }

    /// The `geni_api` number.
    pub fn number(self) -> i64 {
        match self {
            ApiVersion::V2 => 2,
            ApiVersion::V3 => 3,
        }
    }
}

/// Every XML-RPC method the AM knows, on either endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GetVersion (v2, v3).
    GetVersion,
    /// ListResources (v2, v3).
    ListResources,
    /// Describe (v3).
    Describe,
    /// Allocate (v3).
    Allocate,
    /// Provision (v3).
    Provision,
    /// Status (v3).
    Status,
    /// PerformOperationalAction (v3).
    PerformOperationalAction,
    /// Renew (v3).
    Renew,
    /// Delete (v3).
    Delete,
    /// Shutdown (v2, v3).
    Shutdown,
    /// CreateSliver (v2).
    CreateSliver,
    /// SliverStatus (v2).
    SliverStatus,
    /// RenewSliver (v2).
    RenewSliver,
    /// DeleteSliver (v2).
    DeleteSliver,
    /// Snapshot extension: ListSnapshots (v2, v3).
    ListSnapshots,
    /// Snapshot extension: DescribeSnapshot (v2, v3).
    DescribeSnapshot,
    /// Snapshot extension: DeleteSnapshot (v2, v3).
    DeleteSnapshot,
    /// ProtoGENI image extension (v2, v3): CreateImage.
    CreateImage,
    /// ProtoGENI image extension (v2, v3): ListImages.
    ListImages,
    /// ProtoGENI image extension (v2, v3): DeleteImage.
    DeleteImage,
}

impl Verb {
    /// The verb for a method name on an endpoint; `None` for names that endpoint lacks.
    pub fn parse(api: ApiVersion, name: &str) -> Option<Verb> {
        use ApiVersion::*;
        use Verb::*;
        Some(match (api, name) {
            (_, "GetVersion") => GetVersion,
            (_, "ListResources") => ListResources,
            (_, "Shutdown") => Shutdown,
            (V3, "Describe") => Describe,
            (V3, "Allocate") => Allocate,
            (V3, "Provision") => Provision,
            (V3, "Status") => Status,
            (V3, "PerformOperationalAction") => PerformOperationalAction,
            (V3, "Renew") => Renew,
            (V3, "Delete") => Delete,
            (V2, "CreateSliver") => CreateSliver,
            (V2, "SliverStatus") => SliverStatus,
            (V2, "RenewSliver") => RenewSliver,
            (V2, "DeleteSliver") => DeleteSliver,
            (_, "ListSnapshots") => ListSnapshots,
            (_, "DescribeSnapshot") => DescribeSnapshot,
            (_, "DeleteSnapshot") => DeleteSnapshot,
            (_, "CreateImage") => CreateImage,
            (_, "ListImages") => ListImages,
            (_, "DeleteImage") => DeleteImage,
            _ => return None,
        })
    }
}

/// Handles one call. `Err` is an XML-RPC fault (unknown method only); every application
/// outcome, error or not, is a GENI return struct.
pub async fn handle(
    am: &Arc<Am>,
    api: ApiVersion,
    caller: &Caller,
    name: &str,
    params: Vec<Value>,
) -> Result<Value, (i64, String)> {
    let verb = Verb::parse(api, name)
        .ok_or_else(|| (-32601, format!("Method {name} not supported on AM API v{}", api.number())))?;
    let a = Args(params);
    use Verb::*;
    let snapshot_verb = matches!(verb, ListSnapshots | DescribeSnapshot | DeleteSnapshot);
    let result: Result<Value, AmError> = match verb {
        _ if snapshot_verb && !am.cfg.extensions.snapshot => {
            Err(AmError::Unsupported(format!("{name}: this aggregate does not offer the snapshot extension")))
        }
        GetVersion => Ok(version::get_version(am, api)),
        ListResources if api == ApiVersion::V2 => v2::list_resources(am, caller, &a).await,
        ListResources => v3::list_resources(am, caller, &a).await,
        Describe => v3::describe(am, caller, &a).await,
        Allocate => v3::allocate(am, caller, &a).await,
        Provision => v3::provision(am, caller, &a).await,
        Status => v3::status(am, caller, &a).await,
        PerformOperationalAction => v3::perform(am, caller, &a).await,
        Renew => v3::renew(am, caller, &a).await,
        Delete => v3::delete(am, caller, &a).await,
        Shutdown => v3::shutdown(am, caller, &a).await,
        CreateSliver => v2::create_sliver(am, caller, &a).await,
        SliverStatus => v2::sliver_status(am, caller, &a).await,
        RenewSliver => v2::renew_sliver(am, caller, &a).await,
        DeleteSliver => v2::delete_sliver(am, caller, &a).await,
        ListSnapshots => crate::snapshot::api::list_snapshots(am, caller, &a).await,
        DescribeSnapshot => crate::snapshot::api::describe_snapshot(am, caller, &a).await,
        DeleteSnapshot => crate::snapshot::api::delete_snapshot(am, caller, &a).await,
        CreateImage => crate::image::create_image(am, caller, &a).await,
        ListImages => crate::image::list_images(am, caller, &a).await,
        DeleteImage => crate::image::delete_image(am, caller, &a).await,
    };
    if let Err(e) = &result {
        tracing::info!(method = name, code = e.code(), error = %e, "call failed");
    }
    let mut reply = envelope(result);
    // GetVersion alone carries geni_api next to code/value/output (AM API spec, omni checks).
    if verb == GetVersion {
        if let Value::Struct(m) = &mut reply {
            m.insert("geni_api".into(), Value::Int(api.number()));
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_belong_to_their_endpoint() {
        assert_eq!(Verb::parse(ApiVersion::V3, "Allocate"), Some(Verb::Allocate));
        assert_eq!(Verb::parse(ApiVersion::V2, "Allocate"), None);
        assert_eq!(Verb::parse(ApiVersion::V2, "CreateSliver"), Some(Verb::CreateSliver));
        assert_eq!(Verb::parse(ApiVersion::V3, "CreateSliver"), None);
        assert_eq!(Verb::parse(ApiVersion::V3, "GetVersion"), Some(Verb::GetVersion));
        assert_eq!(Verb::parse(ApiVersion::V3, "Bogus"), None);
        for api in [ApiVersion::V2, ApiVersion::V3] {
            assert_eq!(Verb::parse(api, "ListSnapshots"), Some(Verb::ListSnapshots));
            assert_eq!(Verb::parse(api, "DescribeSnapshot"), Some(Verb::DescribeSnapshot));
            assert_eq!(Verb::parse(api, "DeleteSnapshot"), Some(Verb::DeleteSnapshot));
        }
    }

    #[test]
    fn paths_map_to_versions() {
        assert_eq!(ApiVersion::from_path("/am/3.0"), Some(ApiVersion::V3));
        assert_eq!(ApiVersion::from_path("/am/2.0/"), Some(ApiVersion::V2));
        assert_eq!(ApiVersion::from_path("/"), Some(ApiVersion::V3));
        assert_eq!(ApiVersion::from_path("/other"), None);
    }
}
