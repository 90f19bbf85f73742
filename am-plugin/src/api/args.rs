//! Decoding of positional XML-RPC arguments and the options struct.

use std::collections::BTreeMap;

use base64::Engine as _;
use flate2::write::ZlibEncoder;
use std::io::Write as _;

use crate::auth::CredentialInput;
use crate::error::AmError;
use crate::manifest::GeniUser;
use crate::xmlrpc::Value;

/// The positional parameters of a call.
#[derive(Debug)]
pub struct Args(pub Vec<Value>);

/// The options struct of a call.
#[derive(Debug, Default)]
pub struct Options(pub BTreeMap<String, Value>);

impl Args {
    fn get(&self, i: usize, what: &str) -> Result<&Value, AmError> {
        self.0.get(i).ok_or_else(|| AmError::BadArgs(format!("Missing argument {} ({what})", i + 1)))
    }

    /// A string argument (base64 holding UTF-8 is accepted too).
    pub fn string(&self, i: usize, what: &str) -> Result<String, AmError> {
        self.get(i, what)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AmError::BadArgs(format!("{what} must be a string")))
    }

    /// A list of strings (a single string is taken as a list of one).
    pub fn strings(&self, i: usize, what: &str) -> Result<Vec<String>, AmError> {
        match self.get(i, what)? {
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| AmError::BadArgs(format!("{what} must hold strings")))
                })
                .collect(),
            v => v
                .as_str()
                .map(|s| vec![s.to_string()])
                .ok_or_else(|| AmError::BadArgs(format!("{what} must be a list of strings"))),
        }
    }

    /// The credentials list: bare strings (v2) or `{geni_type, geni_version, geni_value}`.
    pub fn credentials(&self, i: usize) -> Result<Vec<CredentialInput>, AmError> {
        let items = match self.get(i, "credentials")? {
            Value::Array(a) => a,
            _ => return Err(AmError::BadArgs("credentials must be a list".into())),
        };
        items
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(CredentialInput::bare(s.clone())),
                Value::Base64(b) => Ok(CredentialInput::bare(String::from_utf8_lossy(b).into_owned())),
                Value::Struct(m) => {
                    let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    let (t, ver) = (text("geni_type"), text("geni_version"));
                    match m.get("geni_value") {
                        Some(Value::Base64(b)) => Ok(CredentialInput::bytes(&t, &ver, b.clone())),
                        Some(Value::Str(s)) => Ok(CredentialInput::text(&t, &ver, s.clone())),
                        _ => Err(AmError::BadArgs("credential struct without geni_value".into())),
                    }
                }
                _ => Err(AmError::BadArgs("a credential must be a string or a struct".into())),
            })
            .collect()
    }

    /// The options struct at `i`; absent means empty.
    pub fn options(&self, i: usize) -> Result<Options, AmError> {
        match self.0.get(i) {
            None | Some(Value::Nil) => Ok(Options::default()),
            Some(Value::Struct(m)) => Ok(Options(m.clone())),
            Some(_) => Err(AmError::BadArgs("options must be a struct".into())),
        }
    }
}

impl Options {
    /// A boolean flag (absent is false).
    pub fn flag(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(Value::truthy)
    }

    /// A string option.
    pub fn string(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(Value::as_str).map(str::to_string)
    }

    /// `geni_speaking_for`.
    pub fn speaking_for(&self) -> Option<String> {
        self.string("geni_speaking_for").filter(|s| !s.is_empty())
    }

    /// Checks `geni_rspec_version`: required; GENI 3 only.
    pub fn require_rspec_version(&self) -> Result<(), AmError> {
        let v = self
            .0
            .get("geni_rspec_version")
            .ok_or_else(|| AmError::BadArgs("Option geni_rspec_version is required".into()))?;
        let field = |k: &str| {
            v.get(k)
                .map(|x| match x {
                    Value::Int(i) => i.to_string(),
                    other => other.as_str().unwrap_or_default().to_string(),
                })
                .unwrap_or_default()
        };
        let (t, ver) = (field("type"), field("version"));
        if t.eq_ignore_ascii_case("geni") && ver == "3" {
            Ok(())
        } else if v.as_struct().is_none() {
            Err(AmError::BadArgs("geni_rspec_version must be a struct {type, version}".into()))
        } else {
            Err(AmError::BadVersion(format!("RSpec version {t} {ver} is not supported (GENI 3 only)")))
        }
    }

    /// `geni_users` as given (each needs `urn`; `keys` may be empty).
    pub fn users(&self) -> Result<Vec<GeniUser>, AmError> {
        match self.0.get("geni_users") {
            None => Ok(Vec::new()),
            Some(v) => users_from(v),
        }
    }
}

/// Decodes a `[{urn, keys[]}]` list (v3 option, v2 argument).
pub fn users_from(v: &Value) -> Result<Vec<GeniUser>, AmError> {
    let items = v.as_array().ok_or_else(|| AmError::BadArgs("geni_users must be a list".into()))?;
    items
        .iter()
        .map(|u| {
            let urn = u
                .get("urn")
                .and_then(Value::as_str)
                .ok_or_else(|| AmError::BadArgs("geni_users entry without urn".into()))?;
            let keys = match u.get("keys") {
                None => Vec::new(),
                Some(Value::Array(ks)) => ks.iter().filter_map(|k| k.as_str().map(str::to_string)).collect(),
                Some(k) => k.as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
            };
            Ok(GeniUser { urn: urn.to_string(), keys })
        })
        .collect()
}

/// `geni_compressed`: base64 of zlib (RFC 1950) of the text.
pub fn compress(text: &str) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(text.as_bytes());
    let bytes = z.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The RSpec text, compressed if the options ask for it.
pub fn maybe_compress(opts: &Options, text: String) -> Value {
    if opts.flag("geni_compressed") {
        Value::Str(compress(&text))
    } else {
        Value::Str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read as _;

    #[test]
    fn compression_is_zlib_base64() {
        let c = compress("<rspec/>");
        let raw = base64::engine::general_purpose::STANDARD.decode(c).unwrap();
        let mut s = String::new();
        ZlibDecoder::new(&raw[..]).read_to_string(&mut s).unwrap();
        assert_eq!(s, "<rspec/>");
    }

    #[test]
    fn rspec_version_checks() {
        let o = Options::default();
        assert_eq!(o.require_rspec_version().unwrap_err().code(), 1);
        let mut m = BTreeMap::new();
        m.insert(
            "geni_rspec_version".to_string(),
            Value::structure([("type", Value::str("GENI")), ("version", Value::str("3"))]),
        );
        assert!(Options(m.clone()).require_rspec_version().is_ok());
        m.insert(
            "geni_rspec_version".to_string(),
            Value::structure([("type", Value::str("ProtoGENI")), ("version", Value::str("2"))]),
        );
        assert_eq!(Options(m).require_rspec_version().unwrap_err().code(), 4);
    }

    #[test]
    fn credentials_accept_strings_structs_and_base64() {
        let a = Args(vec![Value::Array(vec![
            Value::str("<signed-credential/>"),
            Value::structure([
                ("geni_type", Value::str("geni_sfa")),
                ("geni_version", Value::str("3")),
                ("geni_value", Value::Base64(b"<signed-credential/>".to_vec())),
            ]),
        ])]);
        let c = a.credentials(0).unwrap();
        assert_eq!(c.len(), 2);
        assert!(matches!(c[0], CredentialInput::Bare(_)));
    }
}
