//! `vnsnap-testbed ch ...`: the test clearinghouse from the command line.

use std::path::Path;

use chrono::{Duration, Utc};

use super::{speaks_for, CertSpec, ChError, Clearinghouse, CredSpec, Digest};

const USAGE: &str = "usage: ch init DIR AUTHORITY\n\
    \x20      ch user DIR NAME\n\
    \x20      ch slice DIR NAME [--project P]\n\
    \x20      ch tool DIR NAME\n\
    \x20      ch cred DIR --user NAME [--slice NAME] [--days N] [--sha1]\n\
    \x20      ch speaksfor DIR --user NAME --tool NAME [--days N] [--sha1]";

/// Run a CH subcommand. `args` are the words after `ch` (e.g. `["user", "/tmp/ch", "alice"]`).
///
/// Returns what to print on stdout: for `init/user/slice/tool` the URN and the key, certificate
/// and chain paths (`key=... cert=... chain=...`), for `cred/speaksfor` the signed credential
/// XML. `cred` without `--slice` makes a user credential.
pub fn cli(args: &[String]) -> Result<String, ChError> {
    let (cmd, rest) = args.split_first().ok_or_else(|| ChError::Invalid(USAGE.into()))?;
    let mut positional = Vec::new();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--sha1" {
            flags.push((a.clone(), None));
        } else if a.starts_with("--") {
            let v = it.next().ok_or_else(|| ChError::Invalid(format!("{a} needs a value\n{USAGE}")))?;
            flags.push((a.clone(), Some(v.clone())));
        } else {
            positional.push(a.clone());
        }
    }
    let flag = |name: &str| flags.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.clone());
    let has = |name: &str| flags.iter().any(|(k, _)| k == name);
    let digest = if has("--sha1") { Digest::Sha1 } else { Digest::Sha256 };
    let days: i64 = match flag("--days") {
        Some(d) => d.parse().map_err(|_| ChError::Invalid(format!("bad --days {d}")))?,
        None => 30,
    };
    let cert_spec = CertSpec { digest, ..CertSpec::default() };
    let dir = positional.first().map(Path::new).ok_or_else(|| ChError::Invalid(USAGE.into()))?;
    let describe = |id: &super::Identity| {
        format!(
            "{}\nkey={}\ncert={}\nchain={}\n",
            id.urn,
            id.key.display(),
            id.cert.display(),
            id.cert
                .with_file_name(format!("{}-chain.pem", id.cert.file_stem().unwrap_or_default().to_string_lossy()))
                .display()
        )
    };
    match (cmd.as_str(), positional.len()) {
        ("init", 2) => {
            let ch = Clearinghouse::create(dir, &positional[1])?;
            Ok(describe(ch.ca()))
        }
        ("user", 2) => {
            let ch = Clearinghouse::open(dir)?;
            Ok(describe(&ch.user(&positional[1], &cert_spec)?))
        }
        ("slice", 2) => {
            let ch = Clearinghouse::open(dir)?;
            let project = flag("--project");
            Ok(describe(&ch.slice(project.as_deref(), &positional[1], &cert_spec)?))
        }
        ("tool", 2) => {
            let ch = Clearinghouse::open(dir)?;
            Ok(describe(&ch.tool(&positional[1], &cert_spec)?))
        }
        ("cred", 1) => {
            let ch = Clearinghouse::open(dir)?;
            let user_name = flag("--user").ok_or_else(|| ChError::Invalid(USAGE.into()))?;
            let user = ch.find("user", &user_name)?;
            let expires = Utc::now() + Duration::days(days);
            match flag("--slice") {
                Some(s) => {
                    let slice = ch.find("slice", &s)?;
                    let spec = CredSpec::default().expires(expires).digest(digest);
                    ch.slice_credential(&user, &slice, &spec)
                }
                None => {
                    let spec = CredSpec::user_default().expires(expires).digest(digest);
                    ch.user_credential(&user, &spec)
                }
            }
        }
        ("speaksfor", 1) => {
            let ch = Clearinghouse::open(dir)?;
            let user = ch.find("user", &flag("--user").ok_or_else(|| ChError::Invalid(USAGE.into()))?)?;
            let tool = ch.find("tool", &flag("--tool").ok_or_else(|| ChError::Invalid(USAGE.into()))?)?;
            speaks_for(&user, &tool, Utc::now() + Duration::days(days), digest)
        }
        _ => Err(ChError::Invalid(USAGE.into())),
    }
}
