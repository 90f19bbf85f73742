//! GetVersion, identical in shape on both endpoints but for `geni_api`.

use crate::aggregate::Am;
use crate::api::ApiVersion;
use crate::xmlrpc::Value;
use vnsnap_rspec::{EMULAB_NS, GENI_V3_NS, OPSTATE_NS, USER_NS};

fn rspec_version(schema: &str, extensions: &[&str]) -> Value {
    Value::structure([
        ("type", Value::str("GENI")),
        ("version", Value::str("3")),
        ("schema", Value::str(schema)),
        ("namespace", Value::str(GENI_V3_NS)),
        ("extensions", Value::Array(extensions.iter().map(|e| Value::str(*e)).collect())),
    ])
}

fn cred_type(t: &str, v: &str) -> Value {
    Value::structure([("geni_type", Value::str(t)), ("geni_version", Value::str(v))])
}

/// The `value` of GetVersion.
pub fn get_version(am: &Am, api: ApiVersion) -> Value {
    let base = am.cfg.base_url();
    Value::structure([
        ("geni_api", Value::Int(api.number())),
        (
            "geni_api_versions",
            Value::structure([
                ("2", Value::str(format!("{base}/am/2.0"))),
                ("3", Value::str(format!("{base}/am/3.0"))),
            ]),
        ),
        (
            "geni_request_rspec_versions",
            Value::Array(vec![rspec_version("http://www.geni.net/resources/rspec/3/request.xsd", &[EMULAB_NS])]),
        ),
        (
            "geni_ad_rspec_versions",
            Value::Array(vec![rspec_version(
                "http://www.geni.net/resources/rspec/3/ad.xsd",
                &[EMULAB_NS, OPSTATE_NS, USER_NS],
            )]),
        ),
        (
            "geni_credential_types",
            Value::Array(vec![cred_type("geni_sfa", "3"), cred_type("geni_sfa", "2"), cred_type("geni_abac", "1")]),
        ),
        // Real test suites type-check this as an int 0/1, not a boolean.
        ("geni_single_allocation", Value::Int(0)),
        ("geni_allocate", Value::str("geni_disjoint")),
        ("geni_am_type", Value::str(crate::AM_TYPE)),
        ("geni_am_code", Value::str(env!("CARGO_PKG_VERSION"))),
        ("geni_am_urn", Value::str(am.cfg.am_urn())),
        // How a client (vnsnap smoke) learns that the snapshot extension is offered; absent when
        // `[extensions] snapshot = false`.
        (
            "vnsnap_extensions",
            Value::Array(if am.cfg.extensions.snapshot { vec![Value::str("vnsnap_snapshot")] } else { vec![] }),
        ),
    ])
}
