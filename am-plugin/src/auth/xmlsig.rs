//! XML-DSig verification of one `<Signature>` with the xmlsec1 tool (libxmlsec1, the engine the
//! GENI reference tools use).
//!
//! xmlsec1 is told to use **only** X509 key data (`--enabled-key-data x509`) and only our trust
//! roots: without that it falls back to a bare `<KeyValue>` in KeyInfo and reports OK for a
//! signature by any key (GENI-AM-API.md §9 "security trap"). The caller must also have validated
//! the signing certificate's chain with our own code; this module is the last check, the
//! cryptographic one.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::AuthError;

/// Verify the signature whose `xml:id` is `node_id` in `xml`.
pub(crate) fn verify(
    xmlsec1: &Path,
    xml: &str,
    node_id: &str,
    trusted_pems: &[std::path::PathBuf],
    timeout: Duration,
) -> Result<(), AuthError> {
    let mut file = tempfile::Builder::new()
        .prefix("vnsnap-cred")
        .suffix(".xml")
        .tempfile()
        .map_err(|e| AuthError::Internal(format!("temporary file: {e}")))?;
    file.write_all(xml.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| AuthError::Internal(format!("write temporary file: {e}")))?;
    let mut cmd = Command::new(xmlsec1);
    cmd.arg("--verify").arg("--node-id").arg(node_id).arg("--enabled-key-data").arg("x509");
    for p in trusted_pems {
        cmd.arg("--trusted-pem").arg(p);
    }
    // stderr goes to a file, not a pipe, so a chatty xmlsec1 can never block on a full pipe.
    let mut errf = tempfile::tempfile().map_err(|e| AuthError::Internal(format!("temporary file: {e}")))?;
    let errf_child = errf.try_clone().map_err(|e| AuthError::Internal(format!("temporary file: {e}")))?;
    cmd.arg(file.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(errf_child));
    let mut child = cmd.spawn().map_err(|e| AuthError::Internal(format!("cannot run {}: {e}", xmlsec1.display())))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AuthError::Internal("xmlsec1 timed out".into()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(AuthError::Internal(format!("wait for xmlsec1: {e}"))),
        }
    };
    let mut stderr = String::new();
    {
        use std::io::{Read as _, Seek as _};
        let _ = errf.rewind();
        let _ = errf.take(64 * 1024).read_to_string(&mut stderr);
    }
    if status.success() {
        return Ok(());
    }
    // Summarise xmlsec1's diagnostics: the digest/signature mismatch is the usual cause.
    let reason = if stderr.contains("data and digest do not match") {
        "digest of the signed content does not match (content altered)".to_string()
    } else if stderr.contains("signature do not match") || stderr.contains("signature is invalid") {
        "signature value does not match".to_string()
    } else if stderr.contains("certificate verification failed") {
        "xmlsec1 could not verify the signing certificate".to_string()
    } else {
        let last =
            stderr.lines().rev().find(|l| l.contains("error") || l.contains("FAIL")).unwrap_or("verification failed");
        format!("xmlsec1: {}", last.chars().take(200).collect::<String>())
    };
    Err(AuthError::SignatureInvalid(reason))
}
