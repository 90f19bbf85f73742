//! Errors, GENI reply unpacking, JSON conversion and text tables of the CLI.

use crate::xmlrpc::Value;

/// Why a CLI run failed. Each renders as one line (see [`error_line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// Bad command line or configuration (exit 2).
    Usage(String),
    /// `--help` / `--version` text (printed on stdout, exit 0).
    Help(String),
    /// The AM answered with a GENI code other than SUCCESS (exit 1).
    Am {
        /// Method called.
        method: String,
        /// `geni_code`.
        code: i64,
        /// The reply's `output`.
        output: String,
    },
    /// Anything else: transport, files, a failed background operation (exit 1).
    Failed(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Help(_) => 0,
            CliError::Usage(_) => 2,
            CliError::Am { .. } | CliError::Failed(_) => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m} (see vnsnap --help)"),
            CliError::Help(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Am { method, code, output } => {
                let out = if output.trim().is_empty() { "failed" } else { output.trim() };
                write!(f, "{method}: {out} (geni_code {code} {})", geni_code_name(*code))
            }
        }
    }
}

impl From<crate::client::ClientError> for CliError {
    fn from(e: crate::client::ClientError) -> Self {
        CliError::Failed(e.to_string())
    }
}

/// The one stderr line for an error: `vnsnap: <message>`, newlines folded, at most 600 chars.
pub fn error_line(e: &CliError) -> String {
    let mut msg = one_line(&e.to_string());
    if msg.chars().count() > 600 {
        msg = msg.chars().take(597).collect::<String>() + "...";
    }
    format!("vnsnap: {msg}")
}

/// Folds whitespace runs containing newlines into `"; "`.
pub fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// The name of a GENI AM API return code.
pub fn geni_code_name(code: i64) -> &'static str {
    match code {
        0 => "SUCCESS",
        1 => "BADARGS",
        2 => "ERROR",
        3 => "FORBIDDEN",
        4 => "BADVERSION",
        5 => "SERVERERROR",
        6 => "TOOBIG",
        7 => "REFUSED",
        8 => "TIMEDOUT",
        9 => "DBERROR",
        10 => "RPCERROR",
        11 => "UNAVAILABLE",
        12 => "SEARCHFAILED",
        13 => "UNSUPPORTED",
        14 => "BUSY",
        15 => "EXPIRED",
        16 => "INPROGRESS",
        17 => "ALREADYEXISTS",
        18 => "MISSINGARGS",
        19 => "OUTOFRANGE",
        22 => "CREDENTIAL_INVALID",
        24 => "VLAN_UNAVAILABLE",
        25 => "INSUFFICIENT_BANDWIDTH",
        26 => "INSUFFICIENT_NODES",
        _ => "UNKNOWN",
    }
}

/// The `value` of a GENI reply `{code: {geni_code}, value, output}`, or the error.
pub fn geni_value(method: &str, reply: Value) -> Result<Value, CliError> {
    let code = match reply.get("code").and_then(|c| c.get("geni_code")) {
        Some(Value::Int(c)) => *c,
        _ => return Err(CliError::Failed(format!("{method}: the reply is not a GENI return struct"))),
    };
    if code != 0 {
        let output = reply.get("output").and_then(Value::as_str).unwrap_or_default().to_string();
        return Err(CliError::Am { method: method.into(), code, output });
    }
    Ok(reply.get("value").cloned().unwrap_or(Value::Nil))
}

/// An XML-RPC value as JSON (base64 as its UTF-8 text when it is text, else base64).
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Int(i) => J::from(*i),
        Value::Bool(b) => J::Bool(*b),
        Value::Str(s) | Value::DateTime(s) => J::String(s.clone()),
        Value::Double(d) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Value::Base64(b) => match std::str::from_utf8(b) {
            Ok(s) => J::String(s.to_string()),
            Err(_) => {
                use base64::Engine as _;
                J::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
        },
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Struct(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Value::Nil => J::Null,
    }
}

/// A member as display text (`""` when absent).
pub fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::Str(s)) => s.clone(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Double(d)) => d.to_string(),
        Some(Value::Nil) | None => String::new(),
        Some(other) => other.as_str().map(str::to_string).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// An integer member (ints, or strings holding one).
pub fn int(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Bytes for people: `768.0 MiB`.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// A left-aligned text table with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i + 1 < n {
                s.push_str(&" ".repeat(w[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The percentage in a progress text such as `saving 63% (482 of 768 MiB)`.
pub fn progress_percent(s: &str) -> Option<u64> {
    let at = s.find('%')?;
    let digits: String = s[..at].chars().rev().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.chars().rev().collect::<String>().parse().ok()?;
    Some(n.min(100))
}
