//! The per-VM image catalog: one SQLite row per image version, in the AM's database.
//!
//! A row is `pending` from `CreateImage` until its agent has flattened the disk, then
//! `ready` (usable in requests, listed, advertised) or `failed`. `DeleteImage`, or a newer
//! version of the same URN becoming ready, moves it to `deleted`; its file is removed from
//! its host (`purged`) once no live sliver boots from it.

use rusqlite::{params, Connection, OptionalExtension, Row};

/// Tables of the image catalog (created with the AM's schema by `state::Db::open`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
  id TEXT PRIMARY KEY,
  urn TEXT NOT NULL COLLATE NOCASE,
  name TEXT NOT NULL,
  owner TEXT NOT NULL COLLATE NOCASE,
  slice_urn TEXT NOT NULL COLLATE NOCASE,
  sliver_urn TEXT NOT NULL,
  host TEXT NOT NULL,
  path TEXT NOT NULL DEFAULT '',
  base TEXT NOT NULL,
  global INTEGER NOT NULL,
  state TEXT NOT NULL,
  created TEXT NOT NULL,
  bytes INTEGER NOT NULL DEFAULT 0,
  pause_us INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  purged INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS images_urn ON images(urn);
CREATE INDEX IF NOT EXISTS images_owner ON images(owner);
";

/// Creates the catalog tables if they do not exist. Called from the AM's database setup.
pub fn init(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(SCHEMA)
}

/// State of an image version. Moves only through [`ImageState::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    /// Being captured and flattened.
    Pending,
    /// Complete on its host: usable.
    Ready,
    /// The capture failed; nothing usable.
    Failed,
    /// Deleted (or replaced by a newer version); the file goes once unused.
    Deleted,
}

/// What happens to an image version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageEvent {
    /// The agent finished the image.
    Finished,
    /// The capture failed.
    Failed,
    /// DeleteImage, or replaced by a newer version.
    Delete,
}

impl ImageState {
    /// The stored (and reported) name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Ready => "ready",
            ImageState::Failed => "failed",
            ImageState::Deleted => "deleted",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<ImageState> {
        [ImageState::Pending, ImageState::Ready, ImageState::Failed, ImageState::Deleted]
            .into_iter()
            .find(|e| e.as_str() == s)
    }

    /// The one transition function. A pending image cannot be deleted (BUSY to the caller).
    pub fn next(self, event: ImageEvent) -> Option<ImageState> {
        use ImageEvent as E;
        use ImageState::*;
        match (self, event) {
            (Pending, E::Finished) => Some(Ready),
            (Pending, E::Failed) => Some(Failed),
            (Ready | Failed, E::Delete) => Some(Deleted),
            _ => None,
        }
    }
}

/// One image version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// Local id (also the file name on the host).
    pub id: String,
    /// `urn:publicid:IDN+<am>+image+<project>:<name>`; versions share it.
    pub urn: String,
    /// The name given to CreateImage.
    pub name: String,
    /// The user who created it (the spoken-for user under speaks-for).
    pub owner: String,
    /// Slice of the VM it was taken from.
    pub slice_urn: String,
    /// Sliver it was taken from.
    pub sliver_urn: String,
    /// Host holding the file.
    pub host: String,
    /// Path of the file on that host (once ready).
    pub path: String,
    /// Catalog image whose kernel, initrd and command line the image boots with.
    pub base: String,
    /// Public (`global`, ProtoGENI's default) or private to its owner.
    pub global: bool,
    /// State.
    pub state: ImageState,
    /// RFC3339 creation time.
    pub created: String,
    /// File size.
    pub bytes: i64,
    /// Guest pause at the cut, microseconds.
    pub pause_us: i64,
    /// Why it failed.
    pub error: String,
}

const COLS: &str = "id, urn, name, owner, slice_urn, sliver_urn, host, path, base, global, state, created, bytes, \
                    pause_us, error";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ImageRow> {
    let state: String = r.get(10)?;
    Ok(ImageRow {
        id: r.get(0)?,
        urn: r.get(1)?,
        name: r.get(2)?,
        owner: r.get(3)?,
        slice_urn: r.get(4)?,
        sliver_urn: r.get(5)?,
        host: r.get(6)?,
        path: r.get(7)?,
        base: r.get(8)?,
        global: r.get(9)?,
        state: ImageState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, "bad image state".into())
        })?,
        created: r.get(11)?,
        bytes: r.get(12)?,
        pause_us: r.get(13)?,
        error: r.get(14)?,
    })
}

fn query(c: &Connection, sql_where: &str, p: impl rusqlite::Params) -> rusqlite::Result<Vec<ImageRow>> {
    let mut st = c.prepare(&format!("SELECT {COLS} FROM images WHERE {sql_where} ORDER BY created, rowid"))?;
    let rows = st.query_map(p, from_row)?.collect();
    rows
}

/// Inserts a new (pending) version.
pub fn insert(c: &Connection, i: &ImageRow) -> rusqlite::Result<()> {
    c.execute(
        &format!("INSERT INTO images({COLS}) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)"),
        params![
            i.id,
            i.urn,
            i.name,
            i.owner,
            i.slice_urn,
            i.sliver_urn,
            i.host,
            i.path,
            i.base,
            i.global,
            i.state.as_str(),
            i.created,
            i.bytes,
            i.pause_us,
            i.error
        ],
    )?;
    Ok(())
}

/// One version by id.
pub fn by_id(c: &Connection, id: &str) -> rusqlite::Result<Option<ImageRow>> {
    c.query_row(&format!("SELECT {COLS} FROM images WHERE id = ?1"), [id], from_row).optional()
}

/// Every version of a URN that is not deleted, oldest first.
pub fn by_urn(c: &Connection, urn: &str) -> rusqlite::Result<Vec<ImageRow>> {
    query(c, "urn = ?1 AND state != 'deleted'", [urn])
}

/// The newest ready version of a URN.
pub fn ready(c: &Connection, urn: &str) -> rusqlite::Result<Option<ImageRow>> {
    Ok(query(c, "urn = ?1 AND state = 'ready'", [urn])?.pop())
}

/// A user's images that are not deleted, oldest first.
pub fn of_owner(c: &Connection, owner: &str) -> rusqlite::Result<Vec<ImageRow>> {
    query(c, "owner = ?1 AND state != 'deleted'", [owner])
}

/// Every ready image (for the advertisement).
pub fn all_ready(c: &Connection) -> rusqlite::Result<Vec<ImageRow>> {
    query(c, "state = 'ready'", [])
}

/// Every pending image (for the recovery after an AM restart).
pub fn pending(c: &Connection) -> rusqlite::Result<Vec<ImageRow>> {
    query(c, "state = 'pending'", [])
}

/// Deleted or failed versions whose file may still be on their host.
pub fn unpurged(c: &Connection) -> rusqlite::Result<Vec<ImageRow>> {
    query(c, "state IN ('deleted', 'failed') AND purged = 0", [])
}

/// Applies `event` to a version; false if its state does not allow it (nothing changes).
pub fn apply(c: &Connection, id: &str, event: ImageEvent) -> rusqlite::Result<bool> {
    let Some(row) = by_id(c, id)? else { return Ok(false) };
    let Some(next) = row.state.next(event) else { return Ok(false) };
    c.execute("UPDATE images SET state = ?2 WHERE id = ?1", params![id, next.as_str()])?;
    Ok(true)
}

/// Records what the agent reported for a finished capture.
pub fn set_result(
    c: &Connection,
    id: &str,
    path: &str,
    bytes: i64,
    pause_us: i64,
    error: &str,
) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE images SET path = ?2, bytes = ?3, pause_us = ?4, error = ?5 WHERE id = ?1",
        params![id, path, bytes, pause_us, error],
    )?;
    Ok(())
}

/// Notes that a version's file is gone from its host.
pub fn set_purged(c: &Connection, id: &str) -> rusqlite::Result<()> {
    c.execute("UPDATE images SET purged = 1 WHERE id = ?1", [id])?;
    Ok(())
}

/// ProtoGENI's image name rule as omni and the GENI Portal enforce it: 1-64 letters and
/// digits (ProtoGENI itself also takes `-_.+`, which the tools refuse).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("Bad image name {name:?}: use 1-64 letters and digits (no spaces or punctuation)"));
    }
    Ok(())
}

/// The project part of an image URN: the slice authority's last `:` field (ProtoGENI puts
/// images in the slice's project).
pub fn project_of(slice_urn: &str) -> String {
    let authority = slice_urn.strip_prefix("urn:publicid:IDN+").and_then(|r| r.split('+').next()).unwrap_or("");
    authority.rsplit(':').next().filter(|p| !p.is_empty()).unwrap_or("images").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, urn: &str, state: ImageState) -> ImageRow {
        ImageRow {
            id: id.into(),
            urn: urn.into(),
            name: "img".into(),
            owner: "urn:publicid:IDN+ch+user+alice".into(),
            slice_urn: "urn:publicid:IDN+ch:proj+slice+s".into(),
            sliver_urn: "urn:publicid:IDN+am+sliver+x".into(),
            host: "h1".into(),
            path: String::new(),
            base: "guest".into(),
            global: true,
            state,
            created: format!("2030-01-01T00:00:0{}Z", id.len()),
            bytes: 0,
            pause_us: 0,
            error: String::new(),
        }
    }

    #[test]
    fn names_follow_the_portal_rule() {
        assert!(check_name("myImage2").is_ok());
        for bad in ["", "a b", "a-b", "a.b", "../x", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn project_is_the_slice_authority_tail() {
        assert_eq!(project_of("urn:publicid:IDN+ch.geni.net:myproj+slice+s"), "myproj");
        assert_eq!(project_of("urn:publicid:IDN+geni:gpo:gcf+slice+s"), "gcf");
        assert_eq!(project_of("bogus"), "images");
    }

    #[test]
    fn pending_cannot_be_deleted_and_deleted_is_final() {
        assert_eq!(ImageState::Pending.next(ImageEvent::Delete), None);
        assert_eq!(ImageState::Pending.next(ImageEvent::Finished), Some(ImageState::Ready));
        assert_eq!(ImageState::Ready.next(ImageEvent::Delete), Some(ImageState::Deleted));
        assert_eq!(ImageState::Deleted.next(ImageEvent::Delete), None);
        assert_eq!(ImageState::Ready.next(ImageEvent::Failed), None);
    }

    #[test]
    fn versions_and_lookups() {
        let c = Connection::open_in_memory().unwrap();
        init(&c).unwrap();
        let urn = "urn:publicid:IDN+am+image+proj:img";
        insert(&c, &row("a", urn, ImageState::Pending)).unwrap();
        assert!(ready(&c, urn).unwrap().is_none());
        assert!(apply(&c, "a", ImageEvent::Finished).unwrap());
        insert(&c, &row("bb", urn, ImageState::Pending)).unwrap();
        assert!(apply(&c, "bb", ImageEvent::Finished).unwrap());
        assert_eq!(ready(&c, urn).unwrap().unwrap().id, "bb", "the newest ready version wins");
        assert!(apply(&c, "a", ImageEvent::Delete).unwrap());
        assert_eq!(by_urn(&c, urn).unwrap().len(), 1);
        assert_eq!(unpurged(&c).unwrap().len(), 1);
        set_purged(&c, "a").unwrap();
        assert!(unpurged(&c).unwrap().is_empty());
        assert!(!apply(&c, "a", ImageEvent::Delete).unwrap(), "deleted is final");
    }
}
