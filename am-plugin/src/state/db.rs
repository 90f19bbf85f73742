//! SQLite persistence of slices, slivers, links and id counters.
//!
//! Rows of released slivers stay (as `geni_unallocated`) so that sliver URNs, segment ids and
//! MACs are never reused and a deleted sliver is reported as gone, not as unknown-but-free.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::sliver::{Alloc, Op, SliverState};

/// One NIC of a planned VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicPlan {
    /// Interface `client_id` from the request.
    pub client_id: String,
    /// Interface sliver URN (for the manifest).
    pub sliver_urn: String,
    /// MAC assigned by the AM.
    pub mac: String,
    /// Segment of its link, if the interface is on one.
    pub segment: Option<u32>,
    /// `client_id` of that link.
    pub link: Option<String>,
    /// Addresses with prefix length, `10.10.1.1/24`.
    pub ips: Vec<String>,
}

/// What a VM sliver is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmPlan {
    /// vCPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Catalog image name.
    pub image: String,
    /// Requested sliver type name (`vnsnap-vm` or `emulab-xen`).
    pub sliver_type: String,
    /// NICs in order.
    pub nics: Vec<NicPlan>,
}

/// A sliver row.
#[derive(Debug, Clone, PartialEq)]
pub struct Sliver {
    /// Sliver URN (unique over time).
    pub urn: String,
    /// Slice URN.
    pub slice_urn: String,
    /// The Allocate call that created it (its request RSpec feeds the manifest).
    pub allocation: i64,
    /// Node `client_id`.
    pub client_id: String,
    /// Host (agent name).
    pub host: String,
    /// Domain name on the agent.
    pub domain: String,
    /// States.
    pub state: SliverState,
    /// Expiry.
    pub expires: DateTime<Utc>,
    /// Last error (empty if none).
    pub error: String,
    /// The VM.
    pub plan: VmPlan,
}

/// A link row: one switch segment.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    /// Link sliver URN.
    pub urn: String,
    /// Slice URN.
    pub slice_urn: String,
    /// Allocate call.
    pub allocation: i64,
    /// Link `client_id`.
    pub client_id: String,
    /// Segment id (= manifest vlantag).
    pub segment: u32,
    /// Not yet released.
    pub alive: bool,
}

/// A slice row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceRow {
    /// Slice URN.
    pub urn: String,
    /// Shut down by an operator (Shutdown).
    pub shutdown: bool,
    /// `geni_users` of the last Provision/CreateSliver, as JSON `[{urn, keys}]`.
    pub users: String,
}

/// Formats a time the way the AM emits it everywhere: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The database. All access goes through one connection behind a mutex; calls are short.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS slices (
  urn TEXT PRIMARY KEY COLLATE NOCASE,
  shutdown INTEGER NOT NULL DEFAULT 0,
  users TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS allocations (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  slice_urn TEXT NOT NULL COLLATE NOCASE,
  rspec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slivers (
  urn TEXT PRIMARY KEY,
  slice_urn TEXT NOT NULL COLLATE NOCASE,
  allocation INTEGER NOT NULL,
  client_id TEXT NOT NULL,
  host TEXT NOT NULL,
  domain TEXT NOT NULL,
  alloc TEXT NOT NULL,
  op TEXT NOT NULL,
  expires TEXT NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  plan TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS slivers_slice ON slivers(slice_urn);
CREATE INDEX IF NOT EXISTS slivers_alloc ON slivers(alloc);
CREATE TABLE IF NOT EXISTS links (
  urn TEXT PRIMARY KEY,
  slice_urn TEXT NOT NULL COLLATE NOCASE,
  allocation INTEGER NOT NULL,
  client_id TEXT NOT NULL,
  segment INTEGER NOT NULL UNIQUE,
  alive INTEGER NOT NULL);
";

fn sliver_from_row(r: &Row<'_>) -> rusqlite::Result<Sliver> {
    let bad = |i, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, format!("bad {what}").into())
    };
    let alloc: String = r.get(6)?;
    let op: String = r.get(7)?;
    let expires: String = r.get(8)?;
    let plan: String = r.get(10)?;
    Ok(Sliver {
        urn: r.get(0)?,
        slice_urn: r.get(1)?,
        allocation: r.get(2)?,
        client_id: r.get(3)?,
        host: r.get(4)?,
        domain: r.get(5)?,
        state: SliverState {
            alloc: Alloc::from_geni(&alloc).ok_or_else(|| bad(6, "alloc"))?,
            op: Op::from_geni(&op).ok_or_else(|| bad(7, "op"))?,
        },
        expires: DateTime::parse_from_rfc3339(&expires).map_err(|_| bad(8, "expires"))?.with_timezone(&Utc),
        error: r.get(9)?,
        plan: serde_json::from_str(&plan).map_err(|_| bad(10, "plan"))?,
    })
}

const SLIVER_COLS: &str = "urn, slice_urn, allocation, client_id, host, domain, alloc, op, expires, error, plan";

fn link_from_row(r: &Row<'_>) -> rusqlite::Result<LinkRow> {
    Ok(LinkRow {
        urn: r.get(0)?,
        slice_urn: r.get(1)?,
        allocation: r.get(2)?,
        client_id: r.get(3)?,
        segment: r.get(4)?,
        alive: r.get(5)?,
    })
}

/// Takes the next value of a named counter (starting at `start`).
pub fn next_counter(c: &Connection, name: &str, start: i64) -> rusqlite::Result<i64> {
    c.execute(
        "INSERT INTO counters(name, value) VALUES(?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + 1",
        params![name, start],
    )?;
    c.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| r.get(0))
}

/// Inserts a request RSpec and returns the allocation id.
pub fn insert_allocation(c: &Connection, slice: &str, rspec: &str) -> rusqlite::Result<i64> {
    c.execute("INSERT INTO slices(urn) VALUES(?1) ON CONFLICT(urn) DO NOTHING", [slice])?;
    c.execute("INSERT INTO allocations(slice_urn, rspec) VALUES(?1, ?2)", params![slice, rspec])?;
    Ok(c.last_insert_rowid())
}

/// Inserts a new sliver.
pub fn insert_sliver(c: &Connection, s: &Sliver) -> rusqlite::Result<()> {
    let plan = serde_json::to_string(&s.plan).unwrap_or_default();
    c.execute(
        &format!("INSERT INTO slivers({SLIVER_COLS}) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"),
        params![
            s.urn,
            s.slice_urn,
            s.allocation,
            s.client_id,
            s.host,
            s.domain,
            s.state.alloc.geni(),
            s.state.op.geni(),
            rfc3339(s.expires),
            s.error,
            plan
        ],
    )?;
    Ok(())
}

/// Inserts a new link.
pub fn insert_link(c: &Connection, l: &LinkRow) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO links(urn, slice_urn, allocation, client_id, segment, alive)
         VALUES(?1,?2,?3,?4,?5,?6)",
        params![l.urn, l.slice_urn, l.allocation, l.client_id, l.segment, l.alive],
    )?;
    Ok(())
}

impl Db {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> rusqlite::Result<Db> {
        std::fs::create_dir_all(dir).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let conn = Connection::open(dir.join("am.sqlite"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        crate::snapshot::catalog::init(&conn)?;
        crate::image::catalog::init(&conn)?;
        Ok(Db { conn: Mutex::new(conn) })
    }

    /// The connection (held briefly; never across an await).
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in a transaction, committing if it returns `Ok`.
    pub fn with_tx<T, E: From<rusqlite::Error>>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// One sliver by URN, whatever its state.
    pub fn sliver(&self, urn: &str) -> rusqlite::Result<Option<Sliver>> {
        self.conn()
            .query_row(&format!("SELECT {SLIVER_COLS} FROM slivers WHERE urn = ?1"), [urn], sliver_from_row)
            .optional()
    }

    /// Live (allocated or provisioned) slivers of a slice, in creation order.
    pub fn slice_slivers(&self, slice: &str) -> rusqlite::Result<Vec<Sliver>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {SLIVER_COLS} FROM slivers WHERE slice_urn = ?1 AND alloc != 'geni_unallocated'
             ORDER BY rowid"
        ))?;
        let rows = st.query_map([slice], sliver_from_row)?;
        rows.collect()
    }

    /// Every live sliver.
    pub fn live_slivers(&self) -> rusqlite::Result<Vec<Sliver>> {
        let c = self.conn();
        let mut st = c.prepare_cached(&format!(
            "SELECT {SLIVER_COLS} FROM slivers WHERE alloc != 'geni_unallocated' ORDER BY rowid"
        ))?;
        let rows = st.query_map([], sliver_from_row)?;
        rows.collect()
    }

    /// Live links of a slice.
    pub fn slice_links(&self, slice: &str) -> rusqlite::Result<Vec<LinkRow>> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT urn, slice_urn, allocation, client_id, segment, alive FROM links
             WHERE slice_urn = ?1 AND alive = 1 ORDER BY rowid",
        )?;
        let rows = st.query_map([slice], link_from_row)?;
        rows.collect()
    }

    /// Saves a sliver's states and error.
    pub fn set_state(&self, urn: &str, st: SliverState, error: &str) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE slivers SET alloc = ?2, op = ?3, error = ?4 WHERE urn = ?1",
            params![urn, st.alloc.geni(), st.op.geni(), error],
        )?;
        Ok(())
    }

    /// Saves a sliver's expiry.
    pub fn set_expires(&self, urn: &str, t: DateTime<Utc>) -> rusqlite::Result<()> {
        self.conn().execute("UPDATE slivers SET expires = ?2 WHERE urn = ?1", params![urn, rfc3339(t)])?;
        Ok(())
    }

    /// Marks the links of a slice dead once no live sliver uses them.
    pub fn release_unused_links(&self, slice: &str) -> rusqlite::Result<()> {
        let live = self.slice_slivers(slice)?;
        let used: std::collections::HashSet<u32> =
            live.iter().flat_map(|s| s.plan.nics.iter().filter_map(|n| n.segment)).collect();
        for l in self.slice_links(slice)? {
            if !used.contains(&l.segment) {
                self.conn().execute("UPDATE links SET alive = 0 WHERE urn = ?1", [&l.urn])?;
            }
        }
        Ok(())
    }

    /// The request RSpec of an allocation.
    pub fn allocation_rspec(&self, id: i64) -> rusqlite::Result<Option<String>> {
        self.conn().query_row("SELECT rspec FROM allocations WHERE id = ?1", [id], |r| r.get(0)).optional()
    }

    /// A slice row.
    pub fn slice(&self, urn: &str) -> rusqlite::Result<Option<SliceRow>> {
        self.conn()
            .query_row("SELECT urn, shutdown, users FROM slices WHERE urn = ?1", [urn], |r| {
                Ok(SliceRow { urn: r.get(0)?, shutdown: r.get(1)?, users: r.get(2)? })
            })
            .optional()
    }

    /// Stores the slice's `geni_users` (JSON).
    pub fn set_users(&self, urn: &str, users_json: &str) -> rusqlite::Result<()> {
        self.conn().execute("UPDATE slices SET users = ?2 WHERE urn = ?1", params![urn, users_json])?;
        Ok(())
    }

    /// Marks a slice shut down.
    pub fn set_shutdown(&self, urn: &str) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO slices(urn, shutdown) VALUES(?1, 1)
             ON CONFLICT(urn) DO UPDATE SET shutdown = 1",
            [urn],
        )?;
        Ok(())
    }

    /// Forgets a slice's shutdown flag and users once it has no live sliver.
    pub fn forget_slice_if_empty(&self, urn: &str) -> rusqlite::Result<()> {
        if self.slice_slivers(urn)?.is_empty() {
            self.conn().execute("DELETE FROM slices WHERE urn = ?1 AND shutdown = 0", [urn])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sliver::Transition;

    fn sample(urn: &str, slice: &str) -> Sliver {
        Sliver {
            urn: urn.into(),
            slice_urn: slice.into(),
            allocation: 1,
            client_id: "vm1".into(),
            host: "host1".into(),
            domain: "vm-x".into(),
            state: SliverState::NEW.apply(Transition::Allocate).unwrap(),
            expires: DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc),
            error: String::new(),
            plan: VmPlan {
                vcpus: 1,
                memory_mib: 128,
                image: "img".into(),
                sliver_type: "vnsnap-vm".into(),
                nics: vec![],
            },
        }
    }

    #[test]
    fn slivers_survive_reopen_and_counters_grow() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            db.with_tx(|c| {
                insert_allocation(c, "urn:s", "<rspec/>")?;
                insert_sliver(c, &sample("urn:a", "urn:s"))?;
                assert_eq!(next_counter(c, "seg", 100)?, 100);
                assert_eq!(next_counter(c, "seg", 100)?, 101);
                Ok::<_, rusqlite::Error>(())
            })
            .unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let s = db.sliver("urn:a").unwrap().unwrap();
        assert_eq!(s, sample("urn:a", "urn:s"));
        assert_eq!(db.slice_slivers("URN:S").unwrap().len(), 1, "slice URNs ignore case");
        let c = db.conn();
        assert_eq!(next_counter(&c, "seg", 100).unwrap(), 102);
    }
}
