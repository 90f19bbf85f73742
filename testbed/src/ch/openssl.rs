//! Keys and certificates through the `openssl` CLI (`genrsa`, `req`, `ca`).
//!
//! `openssl ca` is used rather than `openssl x509 -req` because only it takes explicit
//! `-startdate/-enddate` on OpenSSL 3.0, which expired and not-yet-valid test certificates need.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use base64::Engine as _;

use super::{ca_urn, io_err, CertSpec, ChError, Clearinghouse, Identity};
use crate::ch::sign::Digest;

/// `openssl ca` keeps a database file per CA; serialise its runs within the process.
static CA_LOCK: Mutex<()> = Mutex::new(());

/// Run a command, turning a failure into [`ChError::Tool`] with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>, ChError> {
    let what = format!("{:?}", cmd.get_program());
    let out = cmd.output().map_err(io_err(&what))?;
    if !out.status.success() {
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        return Err(ChError::Tool(
            format!("{what} {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(out.stdout)
}

fn ca_config(dir: &Path) -> Result<std::path::PathBuf, ChError> {
    let cnf = dir.join("openssl-ca.cnf");
    if !cnf.exists() {
        let text = "[ca]\ndefault_ca = ca_default\n\n[ca_default]\ndatabase = index.txt\n\
                    serial = serial\nnew_certs_dir = newcerts\ndefault_md = sha256\n\
                    policy = policy_any\nemail_in_dn = no\nunique_subject = no\n\
                    copy_extensions = none\n\n[policy_any]\ncommonName = supplied\n\n\
                    [req]\ndistinguished_name = dn\nprompt = no\n\n[dn]\nCN = unused\n";
        std::fs::write(&cnf, text).map_err(io_err(cnf.display()))?;
        std::fs::create_dir_all(dir.join("newcerts")).map_err(io_err("newcerts"))?;
        std::fs::write(dir.join("index.txt"), "").map_err(io_err("index.txt"))?;
        std::fs::write(dir.join("serial"), "1000\n").map_err(io_err("serial"))?;
    }
    Ok(cnf)
}

fn openssl_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%d%H%M%SZ").to_string()
}

fn md(d: Digest) -> &'static str {
    match d {
        Digest::Sha1 => "sha1",
        Digest::Sha256 => "sha256",
    }
}

fn genrsa(key: &Path) -> Result<(), ChError> {
    run(Command::new("openssl").arg("genrsa").arg("-out").arg(key).arg("2048"))?;
    Ok(())
}

/// Write the extension file, make a CSR and have the CA (or the key itself) sign it.
#[allow(clippy::too_many_arguments)] // reason: one private helper mirroring openssl's arguments
fn sign_cert(
    dir: &Path,
    stem: &str,
    urn: &str,
    email: Option<&str>,
    is_ca: bool,
    spec: &CertSpec,
    issuer: Option<&Identity>,
) -> Result<(), ChError> {
    let cnf = ca_config(dir)?;
    let key = dir.join(format!("{stem}.key"));
    let csr = dir.join(format!("{stem}.csr"));
    let cert = dir.join(format!("{stem}.pem"));
    let ext = dir.join(format!("{stem}.ext"));
    let mut san = format!("URI:{urn},URI:urn:uuid:{}", uuid::Uuid::new_v4());
    if let Some(e) = email {
        san.push_str(&format!(",email:{e}"));
    }
    let bc = if is_ca { "critical,CA:TRUE" } else { "critical,CA:FALSE" };
    let aki = if issuer.is_some() { "authorityKeyIdentifier = keyid\n" } else { "" };
    std::fs::write(
        &ext,
        format!("[ext]\nbasicConstraints = {bc}\nsubjectKeyIdentifier = hash\n{aki}subjectAltName = {san}\n"),
    )
    .map_err(io_err(ext.display()))?;
    genrsa(&key)?;
    run(Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key)
        .arg("-subj")
        .arg(format!("/CN={stem}"))
        .arg("-config")
        .arg(&cnf)
        .arg("-out")
        .arg(&csr))?;
    let _guard = CA_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir)
        .args(["ca", "-batch", "-notext", "-rand_serial", "-config"])
        .arg(&cnf)
        .arg("-md")
        .arg(md(spec.digest))
        .arg("-startdate")
        .arg(openssl_time(spec.not_before))
        .arg("-enddate")
        .arg(openssl_time(spec.not_after))
        .arg("-extfile")
        .arg(&ext)
        .args(["-extensions", "ext", "-in"])
        .arg(&csr)
        .arg("-out")
        .arg(&cert);
    match issuer {
        Some(i) => cmd.arg("-cert").arg(&i.cert).arg("-keyfile").arg(&i.key),
        None => cmd.arg("-selfsign").arg("-keyfile").arg(&key),
    };
    run(&mut cmd)?;
    let _ = std::fs::remove_file(&csr);
    std::fs::write(dir.join(format!("{stem}.urn")), urn).map_err(io_err("urn file"))?;
    Ok(())
}

/// Make the self-signed CA of a new CH.
pub(crate) fn make_ca(dir: &Path, authority: &str, spec: &CertSpec) -> Result<Identity, ChError> {
    let urn = ca_urn(authority);
    sign_cert(dir, "ca", &urn, None, true, spec, None)?;
    Ok(Identity { urn, key: dir.join("ca.key"), cert: dir.join("ca.pem"), issuers: Vec::new() })
}

/// Issue a certificate signed by `issuer` (the CH's CA or a sub-authority of it); the file
/// stem is made unique.
pub(crate) fn issue(
    ch: &Clearinghouse,
    issuer: &Identity,
    urn: &str,
    stem: &str,
    email: Option<&str>,
    is_ca: bool,
    spec: &CertSpec,
) -> Result<Identity, ChError> {
    let dir = ch.dir();
    // Claim a free file stem atomically (create_new), so concurrent issuers never collide.
    let mut unique = stem.to_string();
    let mut n = 1;
    loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(format!("{unique}.key"))) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                n += 1;
                unique = format!("{stem}-{n}");
            }
            Err(e) => return Err(ChError::Io("key file".into(), e)),
        }
    }
    sign_cert(dir, &unique, urn, email, is_ca, spec, Some(issuer))?;
    let mut issuers = vec![issuer.cert.clone()];
    issuers.extend(issuer.issuers.iter().cloned());
    let id = Identity {
        urn: urn.to_string(),
        key: dir.join(format!("{unique}.key")),
        cert: dir.join(format!("{unique}.pem")),
        issuers,
    };
    let chain = dir.join(format!("{unique}-chain.pem"));
    std::fs::write(&chain, id.chain_pem()?).map_err(io_err(chain.display()))?;
    Ok(id)
}

/// Load an identity issued earlier under `stem`.
pub(crate) fn load(ch: &Clearinghouse, stem: &str) -> Result<Identity, ChError> {
    let dir = ch.dir();
    let urn_file = dir.join(format!("{stem}.urn"));
    let urn = std::fs::read_to_string(&urn_file).map_err(io_err(urn_file.display()))?.trim().to_string();
    Ok(Identity {
        urn,
        key: dir.join(format!("{stem}.key")),
        cert: dir.join(format!("{stem}.pem")),
        issuers: vec![ch.ca().cert.clone()],
    })
}

/// Decode every CERTIFICATE block of a PEM text.
pub(crate) fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, ChError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let body = &rest[b + BEGIN.len()..];
        let e = body.find(END).ok_or_else(|| ChError::Invalid("unterminated PEM".into()))?;
        let b64: String = body[..e].chars().filter(|c| !c.is_whitespace()).collect();
        out.push(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| ChError::Invalid("bad PEM base64".into()))?,
        );
        rest = &body[e + END.len()..];
    }
    Ok(out)
}

/// The SubjectKeyIdentifier of a certificate file, lowercase hex without colons.
pub(crate) fn subject_key_id(cert: &Path) -> Result<String, ChError> {
    let out = run(Command::new("openssl").args(["x509", "-noout", "-ext", "subjectKeyIdentifier", "-in"]).arg(cert))?;
    let text = String::from_utf8_lossy(&out);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains(':') && !l.starts_with("X509v3"))
        .ok_or_else(|| ChError::Invalid("certificate has no SubjectKeyIdentifier".into()))?;
    Ok(line.replace(':', "").to_ascii_lowercase())
}
