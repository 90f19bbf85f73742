//! Where the CLI's identity and credentials come from: explicit files, or an omni_config.
//!
//! An omni_config is an INI file (Python `ConfigParser`): `[omni] default_cf = NAME` names the
//! framework section whose `cert` and `key` are the experimenter's PEM files;
//! `[aggregate_nicknames] nick = URN,URL` maps `-a nick` to a URL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::xmlrpc::Value;

/// A parsed omni_config: section → (lower-case key → value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OmniConfig {
    /// Sections in the file.
    pub sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl OmniConfig {
    /// Parses INI text (`key = value` or `key: value`, `#`/`;` comments, indented
    /// continuation lines).
    pub fn parse(text: &str) -> Result<OmniConfig, String> {
        let mut cfg = OmniConfig::default();
        let mut section: Option<String> = None;
        let mut last_key: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // Continuation of the previous value.
                if let (Some(s), Some(k)) = (&section, &last_key) {
                    if let Some(v) = cfg.sections.get_mut(s).and_then(|m| m.get_mut(k)) {
                        v.push('\n');
                        v.push_str(trimmed);
                        continue;
                    }
                }
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| format!("omni_config line {}: bad section header {trimmed:?}", i + 1))?;
                let name = name.trim().to_string();
                cfg.sections.entry(name.clone()).or_default();
                section = Some(name);
                last_key = None;
                continue;
            }
            let Some(sec) = &section else {
                return Err(format!("omni_config line {}: {trimmed:?} before any [section]", i + 1));
            };
            let at = trimmed
                .find(['=', ':'])
                .ok_or_else(|| format!("omni_config line {}: expected key = value, got {trimmed:?}", i + 1))?;
            let key = trimmed[..at].trim().to_ascii_lowercase();
            let value = trimmed[at + 1..].trim().to_string();
            cfg.sections.entry(sec.clone()).or_default().insert(key.clone(), value);
            last_key = Some(key);
        }
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<OmniConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        OmniConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A value.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// The framework section to use: `framework`, else `[omni] default_cf`.
    pub fn framework_name(&self, framework: Option<&str>) -> Result<String, String> {
        match framework {
            Some(f) => Ok(f.to_string()),
            None => self
                .get("omni", "default_cf")
                .map(str::to_string)
                .ok_or_else(|| "omni_config has no [omni] default_cf (give -f FRAMEWORK)".to_string()),
        }
    }

    /// The `(cert, key)` files of a framework section, with `~` and `$VARS` expanded.
    pub fn cert_key(&self, framework: Option<&str>) -> Result<(PathBuf, Option<PathBuf>), String> {
        let cf = self.framework_name(framework)?;
        if !self.sections.contains_key(&cf) {
            return Err(format!("omni_config has no [{cf}] section"));
        }
        let cert = self.get(&cf, "cert").ok_or_else(|| format!("omni_config [{cf}] has no cert"))?;
        let key = self.get(&cf, "key");
        Ok((expand_path(cert), key.map(expand_path)))
    }

    /// The URL of an aggregate nickname (`nick = URN,URL`).
    pub fn aggregate_url(&self, nick: &str) -> Option<String> {
        let v = self.get("aggregate_nicknames", nick)?;
        let url = v.rsplit(',').next()?.trim();
        (!url.is_empty()).then(|| url.to_string())
    }
}

/// `~` at the start and `$VAR` / `${VAR}` anywhere, as omni expands its paths.
pub fn expand_path(p: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let p = p.trim();
    let mut s = if p == "~" {
        home.clone()
    } else if let Some(rest) = p.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else {
        p.to_string()
    };
    // $VAR and ${VAR}
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(e) => (&b[..e], &b[e + 1..]),
                None => ("", after),
            }
        } else {
            let e = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..e], &after[e..])
        };
        match std::env::var(name) {
            Ok(v) if !name.is_empty() => out.push_str(&v),
            _ => {
                // Unknown variables stay as written.
                out.push('$');
                out.push_str(&after[..after.len() - tail.len()]);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    s = out;
    PathBuf::from(s)
}

/// The omni_config omni reads by default: `~/.gcf/omni_config`.
pub fn default_omni_config() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".gcf/omni_config");
    p.is_file().then_some(p)
}

/// The credential structs of a credential file as omni saves it: the XML of a credential,
/// or JSON (`{geni_type, geni_version, geni_value}` or a list of them).
pub fn parse_credential(text: &str) -> Result<Vec<Value>, String> {
    let t = text.trim_start_matches('\u{feff}').trim();
    if t.starts_with('<') {
        return Ok(vec![sfa_cred(t)]);
    }
    if t.starts_with('{') || t.starts_with('[') {
        let j: serde_json::Value = serde_json::from_str(t).map_err(|e| format!("not a credential (bad JSON: {e})"))?;
        let items = match j {
            serde_json::Value::Array(a) => a,
            o => vec![o],
        };
        let mut out = Vec::new();
        for it in items {
            let v =
                it.get("geni_value").and_then(serde_json::Value::as_str).ok_or("JSON credential without geni_value")?;
            let ty = it.get("geni_type").and_then(serde_json::Value::as_str).unwrap_or("geni_sfa");
            let ver = match it.get("geni_version") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => "3".into(),
            };
            out.push(Value::structure([
                ("geni_type", Value::str(ty)),
                ("geni_version", Value::str(ver)),
                ("geni_value", Value::str(v)),
            ]));
        }
        return Ok(out);
    }
    Err("not a credential (neither XML nor JSON)".into())
}

/// A v3 `geni_sfa` credential struct for credential XML.
pub fn sfa_cred(xml: &str) -> Value {
    Value::structure([
        ("geni_type", Value::str("geni_sfa")),
        ("geni_version", Value::str("3")),
        ("geni_value", Value::str(xml)),
    ])
}
