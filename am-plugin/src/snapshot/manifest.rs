//! The slice snapshot manifest (ARCHITECTURE.md §5.4; format in `docs/snapshot-format.md`).
//!
//! One JSON document per snapshot, `<state_dir>/snapshots/<id>.json`, written atomically
//! (temporary file, fsync, rename, fsync of the directory) before the catalog entry may say
//! `complete`. It names a format and carries a `major.minor` format version that is
//! independent of the product version: a reader accepts any minor of its major (newer minors
//! only add fields, which readers ignore) and refuses another major with a clear error.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vnsnap_proto::CommitReply;

use super::coordinator::{Frames, SliceSnapshot, Timings, VmCut};

/// The `format` value of every manifest.
pub const FORMAT: &str = "vnsnap-slice-snapshot";

/// The format version this AM writes, and whose major it reads.
pub const FORMAT_VERSION: FormatVersion = FormatVersion { major: 1, minor: 0 };

/// Largest manifest read (the channel logs and images are files of their own; a manifest
/// is a few KiB per VM).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// A `major.minor` format version, written as the string `"1.0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FormatVersion {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
}

impl fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for FormatVersion {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, ManifestError> {
        let bad = || ManifestError::Malformed(format!("format_version {s:?} is not major.minor"));
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        Ok(FormatVersion { major: a.parse().map_err(|_| bad())?, minor: b.parse().map_err(|_| bad())? })
    }
}

impl Serialize for FormatVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FormatVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a manifest could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not a vnsnap slice snapshot manifest at all.
    #[error("Not a vnsnap slice snapshot manifest (format {0:?})")]
    NotAManifest(String),
    /// Written by an incompatible version of the format.
    #[error("Snapshot format version {found} is not supported: this AM reads format {supported_major}.x; use a vnsnap AM that reads {found}")]
    UnsupportedVersion {
        /// The version in the file.
        found: FormatVersion,
        /// The major this AM reads.
        supported_major: u32,
    },
    /// The JSON does not have the manifest's shape.
    #[error("Malformed snapshot manifest: {0}")]
    Malformed(String),
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("Snapshot manifest too large ({0} bytes)")]
    TooLarge(u64),
    /// The snapshot id cannot be a file name.
    #[error("Snapshot id {0:?} is not a valid file name")]
    BadId(String),
    /// A file operation failed.
    #[error("Snapshot manifest {0} of {1} failed")]
    Io(&'static str, PathBuf, #[source] std::io::Error),
}

/// One VM of the snapshot, tying the GENI sliver to its domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEntry {
    /// Node `client_id` of the request.
    pub client_id: String,
    /// Sliver URN at the time of the snapshot.
    pub sliver_urn: String,
    /// Host.
    pub host: String,
    /// Domain name on that host.
    pub domain: String,
}

/// The manifest of one slice snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version it was written in.
    pub format_version: FormatVersion,
    /// Product that wrote it, e.g. `vnsnap-am 0.1.0` (informative only).
    pub generator: String,
    /// Snapshot id: the directory name on every host and this file's name.
    pub snapshot_id: String,
    /// Snapshot URN (the handle clients use).
    pub snapshot_urn: String,
    /// Name given by the experimenter (`vnsnap_snapshot_name`).
    pub name: String,
    /// Slice URN.
    pub slice_urn: String,
    /// URN of the user who asked for it.
    pub owner: String,
    /// When it was taken, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
    /// Epoch the slice's switch ports moved to at the cut.
    pub epoch: u64,
    /// The slice's manifest RSpec at the time of the snapshot.
    pub manifest_rspec: String,
    /// Every VM: sliver, host and domain.
    pub vms: Vec<VmEntry>,
    /// Every VM's cut, ordered by cut instant.
    pub cuts: Vec<VmCut>,
    /// Last cut minus first, ns.
    pub skew_ns: u64,
    /// Phase durations.
    pub timings: Timings,
    /// Switch counters over the cut window.
    pub frames: Frames,
    /// Bytes of every image file on every host.
    pub image_bytes: u64,
    /// What every host committed: directory, domain specs, disk chains, image files with
    /// sizes and BLAKE3 checksums, channel logs, port epochs, cuts and frame counters.
    pub hosts: Vec<CommitReply>,
}

/// What the AM knows of a snapshot beyond what the agents returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestContext {
    /// Snapshot URN.
    pub snapshot_urn: String,
    /// Name.
    pub name: String,
    /// Slice URN.
    pub slice_urn: String,
    /// Owner URN.
    pub owner: String,
    /// Creation time, RFC3339.
    pub created: String,
    /// The slice's manifest RSpec.
    pub manifest_rspec: String,
    /// The VMs.
    pub vms: Vec<VmEntry>,
}

impl Manifest {
    /// The manifest of a committed snapshot.
    pub fn new(ctx: ManifestContext, s: SliceSnapshot) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            generator: format!("vnsnap-am {}", env!("CARGO_PKG_VERSION")),
            snapshot_id: s.snapshot_id,
            snapshot_urn: ctx.snapshot_urn,
            name: ctx.name,
            slice_urn: ctx.slice_urn,
            owner: ctx.owner,
            created: ctx.created,
            epoch: s.epoch,
            manifest_rspec: ctx.manifest_rspec,
            vms: ctx.vms,
            cuts: s.cuts,
            skew_ns: s.skew_ns,
            timings: s.timings,
            frames: s.frames,
            image_bytes: s.image_bytes,
            hosts: s.hosts,
        }
    }

    /// The JSON text (pretty, so that an operator can read it).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string map keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a manifest. The format name and major version are checked before the rest, so
    /// a manifest of another major is refused with that reason rather than a shape error.
    pub fn from_json(text: &[u8]) -> Result<Manifest, ManifestError> {
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(text.len() as u64));
        }
        // Header first (every other field ignored), then the whole document straight from the
        // bytes: going through `serde_json::Value` would turn integers above u64 (the u128
        // cut instants) into floats.
        #[derive(Deserialize)]
        struct Header {
            #[serde(default)]
            format: Option<serde_json::Value>,
            #[serde(default)]
            format_version: Option<String>,
        }
        let h: Header = serde_json::from_slice(text).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let format = h.format.as_ref().and_then(|f| f.as_str()).unwrap_or_default();
        if format != FORMAT {
            return Err(ManifestError::NotAManifest(format.to_string()));
        }
        let version: FormatVersion =
            h.format_version.ok_or_else(|| ManifestError::Malformed("format_version missing".into()))?.parse()?;
        if version.major != FORMAT_VERSION.major {
            return Err(ManifestError::UnsupportedVersion { found: version, supported_major: FORMAT_VERSION.major });
        }
        serde_json::from_slice(text).map_err(|e| ManifestError::Malformed(e.to_string()))
    }
}

/// Whether a snapshot id may be a file name: 1-63 of `[a-z0-9-]` (a UUID is).
pub fn valid_id(id: &str) -> bool {
    vnsnap_proto::valid_name(id)
}

/// The manifest path of snapshot `id` under the AM's state directory.
pub fn path_of(state_dir: &Path, id: &str) -> Result<PathBuf, ManifestError> {
    if !valid_id(id) {
        return Err(ManifestError::BadId(id.to_string()));
    }
    Ok(state_dir.join("snapshots").join(format!("{id}.json")))
}

/// Writes the manifest durably: temporary file, fsync, rename over the final name, fsync of
/// the directory. Only after this returns may the catalog call the snapshot complete.
pub fn write_durable(state_dir: &Path, m: &Manifest) -> Result<PathBuf, ManifestError> {
    let path = path_of(state_dir, &m.snapshot_id)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| ManifestError::Io("mkdir", dir.clone(), e))?;
    let tmp = dir.join(format!(".{}.json.tmp", m.snapshot_id));
    let io = |op, e| ManifestError::Io(op, tmp.clone(), e);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(m.to_json().as_bytes()).map_err(|e| io("write", e))?;
    // The data must be on disk before the rename makes it visible under the final name.
    f.sync_all().map_err(|e| io("fsync", e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| ManifestError::Io("rename", path.clone(), e))?;
    // And the rename itself must be durable before the catalog says complete.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ManifestError::Io("fsync directory", dir.clone(), e))?;
    Ok(path)
}

/// Reads and checks a manifest file.
pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
    let meta = std::fs::metadata(path).map_err(|e| ManifestError::Io("stat", path.to_path_buf(), e))?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(meta.len()));
    }
    let text = std::fs::read(path).map_err(|e| ManifestError::Io("read", path.to_path_buf(), e))?;
    Manifest::from_json(&text)
}

/// Removes a manifest file; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), ManifestError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ManifestError::Io("remove", path.to_path_buf(), e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_print_and_parse() {
        assert_eq!(FORMAT_VERSION.to_string(), "1.0");
        assert_eq!("2.13".parse::<FormatVersion>().unwrap(), FormatVersion { major: 2, minor: 13 });
        assert!("2".parse::<FormatVersion>().is_err());
        assert!("a.b".parse::<FormatVersion>().is_err());
    }

    #[test]
    fn rejects_ids_that_are_not_file_names() {
        let d = Path::new("/state");
        assert!(path_of(d, "../../etc/passwd").is_err());
        assert!(path_of(d, "").is_err());
        assert_eq!(
            path_of(d, "0f8c2a4e-1b2c-4d5e-8f90-123456789abc").unwrap(),
            Path::new("/state/snapshots/0f8c2a4e-1b2c-4d5e-8f90-123456789abc.json")
        );
    }

    #[test]
    fn rejects_other_formats() {
        let e = Manifest::from_json(br#"{"format":"something-else","format_version":"1.0"}"#).unwrap_err();
        assert!(matches!(e, ManifestError::NotAManifest(_)));
    }
}
