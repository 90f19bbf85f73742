//! The AM's one application error type and the one place it becomes a GENI return struct.

use crate::auth::AuthError;
use crate::xmlrpc::Value;

/// GENI error codes (GENI-AM-API.md §1.3) that the AM returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum GeniCode {
    /// 0.
    Success = 0,
    /// 1: malformed arguments.
    BadArgs = 1,
    /// 2: other error.
    Error = 2,
    /// 3: not allowed.
    Forbidden = 3,
    /// 4: bad (RSpec) version.
    BadVersion = 4,
    /// 5: server error.
    ServerError = 5,
    /// 6: request too big.
    TooBig = 6,
    /// 7: refused.
    Refused = 7,
    /// 9: database error.
    DbError = 9,
    /// 10: RPC error (agent unreachable).
    RpcError = 10,
    /// 11: unavailable.
    Unavailable = 11,
    /// 12: slice or sliver not found.
    SearchFailed = 12,
    /// 13: unsupported operation.
    Unsupported = 13,
    /// 14: busy; try again.
    Busy = 14,
    /// 15: expired.
    Expired = 15,
    /// 17: already exists.
    AlreadyExists = 17,
    /// 18: missing arguments.
    MissingArgs = 18,
    /// 19: out of range.
    OutOfRange = 19,
    /// 26: not enough nodes.
    InsufficientNodes = 26,
}

/// Why an AM call failed. Every variant maps to exactly one [`GeniCode`].
#[derive(Debug, thiserror::Error)]
pub enum AmError {
    /// Malformed arguments.
    #[error("{0}")]
    BadArgs(String),
    /// A required argument is missing.
    #[error("{0}")]
    MissingArgs(String),
    /// An RSpec version we do not speak.
    #[error("{0}")]
    BadVersion(String),
    /// Slice or sliver unknown here.
    #[error("{0}")]
    SearchFailed(String),
    /// Operation not supported (for the slivers in their current state).
    #[error("{0}")]
    Unsupported(String),
    /// The slice is locked by a long operation (snapshot).
    #[error("{0}")]
    Busy(String),
    /// The slice already has slivers here.
    #[error("{0}")]
    AlreadyExists(String),
    /// A requested time is not acceptable.
    #[error("{0}")]
    OutOfRange(String),
    /// Not enough room on the hosts.
    #[error("{0}")]
    InsufficientNodes(String),
    /// The slice was shut down by an operator.
    #[error("{0}")]
    Refused(String),
    /// Not allowed for this caller or in this state (ProtoGENI's FORBIDDEN for images).
    #[error("{0}")]
    Forbidden(String),
    /// Credential or certificate check failed.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// SQLite failed.
    #[error("Database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// An agent failed or was unreachable.
    #[error("Agent error: {0}")]
    Agent(String),
    /// Anything else on our side.
    #[error("Internal error: {0}")]
    Internal(String),
}

impl From<vnsnap_proto::client::ClientError> for AmError {
    fn from(e: vnsnap_proto::client::ClientError) -> Self {
        // The Display of ClientError omits its source; include the chain for the user.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        AmError::Agent(msg)
    }
}

impl AmError {
    /// The GENI code of this error.
    pub fn code(&self) -> i32 {
        match self {
            AmError::BadArgs(_) => GeniCode::BadArgs as i32,
            AmError::MissingArgs(_) => GeniCode::MissingArgs as i32,
            AmError::BadVersion(_) => GeniCode::BadVersion as i32,
            AmError::SearchFailed(_) => GeniCode::SearchFailed as i32,
            AmError::Unsupported(_) => GeniCode::Unsupported as i32,
            AmError::Busy(_) => GeniCode::Busy as i32,
            AmError::AlreadyExists(_) => GeniCode::AlreadyExists as i32,
            AmError::OutOfRange(_) => GeniCode::OutOfRange as i32,
            AmError::InsufficientNodes(_) => GeniCode::InsufficientNodes as i32,
            AmError::Refused(_) => GeniCode::Refused as i32,
            AmError::Forbidden(_) => GeniCode::Forbidden as i32,
            AmError::Auth(e) => e.geni_code(),
            AmError::Db(_) => GeniCode::DbError as i32,
            AmError::Agent(_) => GeniCode::RpcError as i32,
            AmError::Internal(_) => GeniCode::ServerError as i32,
        }
    }
}

/// The GENI return envelope `{code:{geni_code, am_type, am_code}, value, output}`: the only
/// place a result becomes what the client sees. Errors carry `value: ""` (as gcf does).
pub fn envelope(result: Result<Value, AmError>) -> Value {
    match result {
        Ok(v) => Value::structure([
            (
                "code",
                Value::structure([
                    ("geni_code", Value::Int(0)),
                    ("am_type", Value::str(crate::AM_TYPE)),
                    ("am_code", Value::Int(0)),
                ]),
            ),
            ("value", v),
            ("output", Value::str("")),
        ]),
        Err(e) => {
            let code = e.code();
            Value::structure([
                (
                    "code",
                    Value::structure([
                        ("geni_code", Value::Int(i64::from(code))),
                        ("am_type", Value::str(crate::AM_TYPE)),
                        ("am_code", Value::Int(i64::from(code))),
                    ]),
                ),
                ("value", Value::str("")),
                ("output", Value::str(e.to_string())),
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_geni_structs() {
        let v = envelope(Err(AmError::Unsupported("no".into())));
        assert_eq!(v.get("code").and_then(|c| c.get("geni_code")), Some(&Value::Int(13)));
        assert_eq!(v.get("output"), Some(&Value::str("no")));
        assert_eq!(v.get("value"), Some(&Value::str("")));
    }

    #[test]
    fn auth_errors_keep_their_code() {
        let v = envelope(Err(AmError::Auth(AuthError::NoCredential)));
        let code = AuthError::NoCredential.geni_code();
        assert_eq!(v.get("code").and_then(|c| c.get("geni_code")), Some(&Value::Int(i64::from(code))));
    }
}
