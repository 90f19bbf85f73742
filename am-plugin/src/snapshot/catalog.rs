//! The snapshot catalog: one SQLite row per slice snapshot, in the AM's database.
//!
//! An entry is `pending` from the POA until the coordinator finishes. It becomes `complete`
//! only after every host committed and the manifest is durable on disk
//! ([`super::manifest::write_durable`]), and `failed` otherwise. A `pending` entry found at
//! start-up belongs to a snapshot the AM crashed in the middle of: it is marked `failed` and
//! cleaned up on its hosts (`super::recover`).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// Tables of the catalog (created with the AM's own schema by `state::Db::open`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
  id TEXT PRIMARY KEY,
  urn TEXT NOT NULL UNIQUE,
  slice_urn TEXT NOT NULL COLLATE NOCASE,
  name TEXT NOT NULL,
  owner TEXT NOT NULL,
  state TEXT NOT NULL,
  created TEXT NOT NULL,
  manifest TEXT NOT NULL DEFAULT '',
  bytes INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  hosts TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS snapshots_slice ON snapshots(slice_urn);
CREATE UNIQUE INDEX IF NOT EXISTS snapshots_live_name ON snapshots(slice_urn, name) WHERE state != 'failed';
CREATE TABLE IF NOT EXISTS snapshot_epochs (
  slice_urn TEXT PRIMARY KEY COLLATE NOCASE,
  epoch INTEGER NOT NULL);
";

/// Creates the catalog tables if they do not exist. Called from the AM's database setup.
pub fn init(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(SCHEMA)
}

/// State of a catalog entry. Moves only through [`EntryState::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryState {
    /// Being taken.
    Pending,
    /// Every host committed and the manifest is durable: restorable.
    Complete,
    /// Aborted, or interrupted by an AM restart; never restorable.
    Failed,
}

impl EntryState {
    /// The stored (and reported) name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Complete => "complete",
            EntryState::Failed => "failed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<EntryState> {
        [EntryState::Pending, EntryState::Complete, EntryState::Failed].into_iter().find(|e| e.as_str() == s)
    }

    /// The one transition: only a pending entry finishes, as complete or failed.
    pub fn finish(self, ok: bool) -> Option<EntryState> {
        match (self, ok) {
            (EntryState::Pending, true) => Some(EntryState::Complete),
            (EntryState::Pending, false) => Some(EntryState::Failed),
            (EntryState::Complete | EntryState::Failed, _) => None,
        }
    }
}

/// The domains of a snapshot on one host (what a cleanup must reach).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDomains {
    /// Host name.
    pub host: String,
    /// Domains.
    pub domains: Vec<String>,
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Snapshot id (UUID; directory name on the hosts).
    pub id: String,
    /// Snapshot URN.
    pub urn: String,
    /// Slice URN.
    pub slice_urn: String,
    /// Experimenter-given name, unique per slice among non-failed entries.
    pub name: String,
    /// URN of the user who asked for it.
    pub owner: String,
    /// State.
    pub state: EntryState,
    /// Creation time, RFC3339.
    pub created: String,
    /// Manifest path (empty until complete).
    pub manifest: String,
    /// Bytes of every image file (0 until complete).
    pub bytes: u64,
    /// Why it failed (empty otherwise).
    pub error: String,
    /// Hosts and domains taking part.
    pub hosts: Vec<HostDomains>,
}

/// Why a catalog change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Another pending or complete snapshot of the slice has this name.
    #[error("Slice {slice} already has a snapshot named {name:?}")]
    NameTaken {
        /// Slice URN.
        slice: String,
        /// Name.
        name: String,
    },
    /// The entry is not pending (any more).
    #[error("Snapshot {0} is not pending")]
    NotPending(String),
    /// SQLite failed.
    #[error("Snapshot catalog")]
    Db(#[from] rusqlite::Error),
}

/// Checks a snapshot name: 1-64 characters of `[A-Za-z0-9_-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("vnsnap_snapshot_name must be 1-64 characters long (got {})", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("vnsnap_snapshot_name may hold only A-Z a-z 0-9 _ - (found {c:?})"));
    }
    Ok(())
}

/// The URN of a new snapshot: `urn:publicid:IDN+<AM authority>+snapshot+<slice>-<name>-<id8>`.
/// The id suffix keeps it unique over time, as slice names and snapshot names are reused.
pub fn snapshot_urn(authority: &str, slice_urn: &str, name: &str, id: &str) -> String {
    let slice: String = slice_urn
        .rsplit('+')
        .next()
        .unwrap_or("slice")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let short: String = id.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    format!("urn:publicid:IDN+{authority}+snapshot+{slice}-{name}-{short}")
}

const COLS: &str = "id, urn, slice_urn, name, owner, state, created, manifest, bytes, error, hosts";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Entry> {
    let bad = |i, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, format!("bad {what}").into())
    };
    let state: String = r.get(5)?;
    let hosts: String = r.get(10)?;
    let bytes: i64 = r.get(8)?;
    Ok(Entry {
        id: r.get(0)?,
        urn: r.get(1)?,
        slice_urn: r.get(2)?,
        name: r.get(3)?,
        owner: r.get(4)?,
        state: EntryState::parse(&state).ok_or_else(|| bad(5, "state"))?,
        created: r.get(6)?,
        manifest: r.get(7)?,
        bytes: u64::try_from(bytes).unwrap_or(0),
        error: r.get(9)?,
        hosts: serde_json::from_str(&hosts).map_err(|_| bad(10, "hosts"))?,
    })
}

/// Records a new pending snapshot; a name already used by a pending or complete snapshot
/// of the slice is refused.
pub fn insert_pending(c: &Connection, e: &Entry) -> Result<(), CatalogError> {
    let taken: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM snapshots WHERE slice_urn = ?1 AND name = ?2 AND state != 'failed')",
        params![e.slice_urn, e.name],
        |r| r.get(0),
    )?;
    if taken {
        return Err(CatalogError::NameTaken { slice: e.slice_urn.clone(), name: e.name.clone() });
    }
    let hosts = serde_json::to_string(&e.hosts).unwrap_or_else(|_| "[]".into());
    c.execute(
        &format!("INSERT INTO snapshots({COLS}) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"),
        params![
            e.id,
            e.urn,
            e.slice_urn,
            e.name,
            e.owner,
            EntryState::Pending.as_str(),
            e.created,
            "",
            0i64,
            "",
            hosts
        ],
    )?;
    Ok(())
}

fn finish(c: &Connection, id: &str, ok: bool, manifest: &str, bytes: u64, error: &str) -> Result<(), CatalogError> {
    let now = get(c, id)?.ok_or_else(|| CatalogError::NotPending(id.to_string()))?;
    let next = now.state.finish(ok).ok_or_else(|| CatalogError::NotPending(id.to_string()))?;
    let n = c.execute(
        "UPDATE snapshots SET state = ?2, manifest = ?3, bytes = ?4, error = ?5 WHERE id = ?1 AND state = 'pending'",
        params![id, next.as_str(), manifest, i64::try_from(bytes).unwrap_or(i64::MAX), error],
    )?;
    if n == 0 {
        return Err(CatalogError::NotPending(id.to_string()));
    }
    Ok(())
}

/// Marks a pending snapshot complete. Call only once every host committed and the manifest
/// at `manifest` is durable.
pub fn mark_complete(c: &Connection, id: &str, manifest: &str, bytes: u64) -> Result<(), CatalogError> {
    finish(c, id, true, manifest, bytes, "")
}

/// Marks a pending snapshot failed, with the reason.
pub fn mark_failed(c: &Connection, id: &str, error: &str) -> Result<(), CatalogError> {
    finish(c, id, false, "", 0, error)
}

/// An entry by id.
pub fn get(c: &Connection, id: &str) -> rusqlite::Result<Option<Entry>> {
    c.query_row(&format!("SELECT {COLS} FROM snapshots WHERE id = ?1"), [id], from_row).optional()
}

/// An entry by URN.
pub fn by_urn(c: &Connection, urn: &str) -> rusqlite::Result<Option<Entry>> {
    c.query_row(&format!("SELECT {COLS} FROM snapshots WHERE urn = ?1"), [urn], from_row).optional()
}

/// The entries of a slice, oldest first.
pub fn of_slice(c: &Connection, slice: &str) -> rusqlite::Result<Vec<Entry>> {
    let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM snapshots WHERE slice_urn = ?1 ORDER BY rowid"))?;
    let rows = st.query_map([slice], from_row)?;
    rows.collect()
}

/// Every pending entry.
pub fn pending(c: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM snapshots WHERE state = 'pending' ORDER BY rowid"))?;
    let rows = st.query_map([], from_row)?;
    rows.collect()
}

/// Removes an entry.
pub fn remove(c: &Connection, id: &str) -> rusqlite::Result<()> {
    c.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
    Ok(())
}

/// Takes the epoch of a new snapshot of `slice`: above every epoch handed out for the slice
/// before (even to aborted snapshots, whose epochs are skipped) and at least `at_least`
/// (one above the highest port epoch the agents report).
pub fn next_epoch(c: &Connection, slice: &str, at_least: u64) -> rusqlite::Result<u64> {
    let last: Option<i64> =
        c.query_row("SELECT epoch FROM snapshot_epochs WHERE slice_urn = ?1", [slice], |r| r.get(0)).optional()?;
    let last = last.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
    let epoch = (last + 1).max(at_least).max(1);
    c.execute(
        "INSERT INTO snapshot_epochs(slice_urn, epoch) VALUES(?1, ?2)
         ON CONFLICT(slice_urn) DO UPDATE SET epoch = ?2",
        params![slice, i64::try_from(epoch).unwrap_or(i64::MAX)],
    )?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        init(&c).unwrap();
        c
    }

    fn entry(id: &str, slice: &str, name: &str) -> Entry {
        Entry {
            id: id.into(),
            urn: snapshot_urn("am.example", slice, name, id),
            slice_urn: slice.into(),
            name: name.into(),
            owner: "urn:publicid:IDN+ch+user+alice".into(),
            state: EntryState::Pending,
            created: "2026-11-26T00:00:00Z".into(),
            manifest: String::new(),
            bytes: 0,
            error: String::new(),
            hosts: vec![HostDomains { host: "h1".into(), domains: vec!["vm-a".into()] }],
        }
    }

    const SLICE: &str = "urn:publicid:IDN+ch+slice+exp1";

    #[test]
    fn accepts_good_names_rejects_bad_ones() {
        for ok in ["a", "before-risky-step", "ckpt_1", &"x".repeat(64)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", &"x".repeat(65), "a b", "../x", "a.b", "é", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urns_name_the_slice_and_stay_unique() {
        let a = snapshot_urn("am.example", SLICE, "ck", "0f8c2a4e-1b2c");
        assert_eq!(a, "urn:publicid:IDN+am.example+snapshot+exp1-ck-0f8c2a4e");
        assert_ne!(a, snapshot_urn("am.example", SLICE, "ck", "1f8c2a4e-1b2c"));
    }

    #[test]
    fn entry_goes_pending_to_complete_once() {
        let c = db();
        insert_pending(&c, &entry("id1", SLICE, "ck")).unwrap();
        assert_eq!(pending(&c).unwrap().len(), 1);
        mark_complete(&c, "id1", "/state/snapshots/id1.json", 42).unwrap();
        let e = get(&c, "id1").unwrap().unwrap();
        assert_eq!((e.state, e.bytes, e.manifest.as_str()), (EntryState::Complete, 42, "/state/snapshots/id1.json"));
        assert!(matches!(mark_failed(&c, "id1", "late"), Err(CatalogError::NotPending(_))), "complete is final");
        assert!(pending(&c).unwrap().is_empty());
        assert_eq!(by_urn(&c, &e.urn).unwrap().unwrap().id, "id1");
        assert_eq!(e.hosts[0].domains, ["vm-a"]);
    }

    #[test]
    fn rejects_a_taken_name_but_not_after_failure() {
        let c = db();
        insert_pending(&c, &entry("id1", SLICE, "ck")).unwrap();
        let e = insert_pending(&c, &entry("id2", SLICE, "ck")).unwrap_err();
        assert!(matches!(e, CatalogError::NameTaken { .. }));
        // Same name in another slice is fine; slice URNs compare without case.
        insert_pending(&c, &entry("id3", "urn:publicid:IDN+ch+slice+other", "ck")).unwrap();
        assert!(insert_pending(&c, &entry("id4", &SLICE.to_uppercase(), "ck")).is_err());
        mark_failed(&c, "id1", "agent died").unwrap();
        insert_pending(&c, &entry("id2", SLICE, "ck")).unwrap();
        let all = of_slice(&c, SLICE).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].error, "agent died");
        remove(&c, "id1").unwrap();
        assert_eq!(of_slice(&c, SLICE).unwrap().len(), 1);
    }

    #[test]
    fn epochs_only_grow() {
        let c = db();
        assert_eq!(next_epoch(&c, SLICE, 1).unwrap(), 1);
        assert_eq!(next_epoch(&c, SLICE, 1).unwrap(), 2, "an aborted snapshot's epoch is skipped");
        assert_eq!(next_epoch(&c, SLICE, 10).unwrap(), 10, "ports ahead of the counter win");
        assert_eq!(next_epoch(&c, SLICE, 3).unwrap(), 11);
        assert_eq!(next_epoch(&c, "urn:publicid:IDN+ch+slice+other", 0).unwrap(), 1);
    }
}
