//! The three forms in which clients send credentials, and their decoding to XML text.
//!
//! * AM API v2 clients send bare XML strings.
//! * omni (v3) sends `{geni_type, geni_version, geni_value}` with `geni_value` an XML-RPC string.
//! * geni-lib on Python 3 sends the same struct with `geni_value` as XML-RPC `<base64>`.
//!
//! The XML-RPC layer may hand a `<base64>` value over either decoded (bytes) or as its base64
//! text; both are accepted.

use base64::Engine as _;

use super::error::AuthError;

/// One element of the `credentials` argument of an AM call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialInput {
    /// A bare credential string (AM API v2 style).
    Bare(String),
    /// A `{geni_type, geni_version, geni_value}` struct (AM API v3 style).
    Struct {
        /// `geni_type`, e.g. `geni_sfa` or `geni_abac`.
        geni_type: String,
        /// `geni_version`, e.g. `"3"`.
        geni_version: String,
        /// `geni_value`.
        geni_value: CredentialValue,
    },
}

/// The `geni_value` of a credential struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialValue {
    /// An XML-RPC `<string>`: normally the XML, but base64 text is recognised too.
    Text(String),
    /// An XML-RPC `<base64>` already decoded by the XML-RPC layer.
    Bytes(Vec<u8>),
}

/// What kind of credential an input holds, once recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredKind {
    /// geni_sfa (privilege) credential, v2 or v3.
    Sfa,
    /// geni_abac credential (speaks-for).
    Abac,
}

impl CredentialInput {
    /// A bare string credential.
    pub fn bare(xml: impl Into<String>) -> Self {
        CredentialInput::Bare(xml.into())
    }

    /// A struct credential whose `geni_value` was an XML-RPC string.
    pub fn text(geni_type: &str, geni_version: &str, value: impl Into<String>) -> Self {
        CredentialInput::Struct {
            geni_type: geni_type.to_string(),
            geni_version: geni_version.to_string(),
            geni_value: CredentialValue::Text(value.into()),
        }
    }

    /// A struct credential whose `geni_value` was an XML-RPC `<base64>` (decoded bytes).
    pub fn bytes(geni_type: &str, geni_version: &str, value: Vec<u8>) -> Self {
        CredentialInput::Struct {
            geni_type: geni_type.to_string(),
            geni_version: geni_version.to_string(),
            geni_value: CredentialValue::Bytes(value),
        }
    }

    /// Size of the raw value in bytes (before any base64 decoding).
    pub fn raw_len(&self) -> usize {
        match self {
            CredentialInput::Bare(s) => s.len(),
            CredentialInput::Struct { geni_value, .. } => match geni_value {
                CredentialValue::Text(s) => s.len(),
                CredentialValue::Bytes(b) => b.len(),
            },
        }
    }

    /// Recognise the kind and decode to XML text. `Ok(None)` means "a credential type we do not
    /// handle": the caller skips it, as the AM API requires (GENI-AM-API.md §3.2 item 1).
    pub(crate) fn decode(&self, max: usize) -> Result<Option<(CredKind, String)>, AuthError> {
        let size = self.raw_len();
        if size > max {
            return Err(AuthError::CredentialTooLarge { size, max });
        }
        match self {
            CredentialInput::Bare(s) => {
                let xml = to_xml_text(s.as_bytes())?;
                let kind = if xml.contains("<type>abac</type>") { CredKind::Abac } else { CredKind::Sfa };
                Ok(Some((kind, xml)))
            }
            CredentialInput::Struct { geni_type, geni_value, .. } => {
                let kind = match geni_type.as_str() {
                    "geni_sfa" => CredKind::Sfa,
                    "geni_abac" => CredKind::Abac,
                    _ => return Ok(None),
                };
                let xml = match geni_value {
                    CredentialValue::Text(s) => to_xml_text(s.as_bytes())?,
                    CredentialValue::Bytes(b) => to_xml_text(b)?,
                };
                Ok(Some((kind, xml)))
            }
        }
    }
}

/// The XML text of a value that is either XML or base64 of XML.
fn to_xml_text(raw: &[u8]) -> Result<String, AuthError> {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let start = raw.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err(AuthError::MalformedCredential("empty credential".into()));
    };
    let bytes = if raw[start] == b'<' {
        raw.to_vec()
    } else {
        let compact: Vec<u8> = raw.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&compact)
            .map_err(|_| AuthError::MalformedCredential("value is neither XML nor base64 of XML".into()))?;
        let decoded = decoded.strip_prefix(b"\xEF\xBB\xBF").map(<[u8]>::to_vec).unwrap_or(decoded);
        if decoded.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'<') {
            return Err(AuthError::MalformedCredential("base64 value does not decode to XML".into()));
        }
        decoded
    };
    String::from_utf8(bytes).map_err(|_| AuthError::MalformedCredential("credential is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_base64_text_value() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("<signed-credential/>");
        let c = CredentialInput::text("geni_sfa", "3", b64);
        let (kind, xml) = c.decode(1 << 20).unwrap().unwrap();
        assert_eq!(kind, CredKind::Sfa);
        assert_eq!(xml, "<signed-credential/>");
    }

    #[test]
    fn skips_unknown_type() {
        let c = CredentialInput::text("geni_sfaBROKEN", "3", "<x/>");
        assert_eq!(c.decode(1 << 20).unwrap(), None);
    }

    #[test]
    fn rejects_garbage_value() {
        let c = CredentialInput::text("geni_sfa", "3", "!!!");
        assert!(matches!(c.decode(1 << 20), Err(AuthError::MalformedCredential(_))));
    }
}
