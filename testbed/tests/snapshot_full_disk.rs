//! Issue 17, acceptance 1: the disk the snapshots are written to fills up during a save.
//!
//! Host 1's snapshot directory (`<state>/snapshots`) is a small tmpfs of its own. On a
//! running 3-VM, 2-host slice:
//! 1. with less room there than the memory images need, prepare refuses (the free-space
//!    check asks the file system the snapshot is written to, not the state directory's);
//! 2. with room enough at prepare, another writer fills the file system right after host 1
//!    prepared (before the cut): the savers hit ENOSPC during the save. The snapshot fails
//!    within 60 s with an error naming the lack of space, every VM of the slice runs and
//!    answers its guest channel (no vCPU wedged in QEMU's userfault handling, no guest left
//!    paused), the workloads' invariants hold and the snapshot's directories are gone;
//! 3. once the space is free again, the next snapshot completes.
//!
//! Filling after prepare is how a real disk runs out (some other writer took the space
//! between the check and the save): a file system too small from the start is refused at
//! prepare, as part 1 shows. The snapshot is driven by the AM's coordinator against the
//! agents, as in `snapshot_faults`, with a client that fills the disk once host 1 has
//! prepared; the agent's error reaches the coordinator's, which the AM reports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vnsnap_am::snapshot::coordinator::{self, HostPart, SnapshotAgent};
use vnsnap_proto::client::{AgentClient, ClientError};
use vnsnap_proto::*;
use vnsnap_testbed::checker::slice::{self, Slice};
use vnsnap_testbed::checker::{WorkloadOptions, Workloads};
use vnsnap_testbed::lab::Lab;

/// A tmpfs mounted for the test; unmounted on drop, so that a failed test leaves nothing
/// mounted.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755"), "vnsnap-full"])
            .arg(at));
        Tmpfs { at: at.to_path_buf() }
    }

    /// Changes the size (of the file system itself, so every mount namespace sees it).
    fn resize(&self, size_mib: u64) {
        run(Command::new("mount").args(["-o", &format!("remount,size={size_mib}m")]).arg(&self.at));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.at).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("running mount");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    n
}

/// An agent client that, once its host has prepared the snapshot, fills `filler`'s file
/// system: the space runs out between prepare's check and the save.
#[derive(Clone)]
struct FillAfterPrepare {
    inner: AgentClient,
    filler: Option<PathBuf>,
}

impl SnapshotAgent for FillAfterPrepare {
    type Error = ClientError;
    async fn snapshot_prepare(&self, r: &PrepareRequest) -> Result<PrepareReply, ClientError> {
        let reply = self.inner.snapshot_prepare(r).await?;
        if let Some(f) = &self.filler {
            let f = f.clone();
            let n = tokio::task::spawn_blocking(move || fill(&f)).await.unwrap();
            eprintln!("host prepared; filled its snapshot file system with {} MiB", n >> 20);
        }
        Ok(reply)
    }
    async fn snapshot_cut(&self, id: &str, r: &CutRequest) -> Result<CutReply, ClientError> {
        self.inner.snapshot_cut(id, r).await
    }
    async fn snapshot_status(&self, id: &str) -> Result<SaveStatus, ClientError> {
        self.inner.snapshot_status(id).await
    }
    async fn snapshot_commit(&self, id: &str) -> Result<CommitReply, ClientError> {
        self.inner.snapshot_commit(id).await
    }
    async fn snapshot_abort(&self, id: &str) -> Result<(), ClientError> {
        self.inner.snapshot_abort(id).await
    }
    async fn snapshot_delete(&self, id: &str) -> Result<(), ClientError> {
        self.inner.snapshot_delete(id).await
    }
    async fn restore_check(&self, r: &RestoreRequest) -> Result<RestoreReply, ClientError> {
        self.inner.restore_check(r).await
    }
    async fn restore_prepare(&self, r: &RestoreRequest) -> Result<RestoreReply, ClientError> {
        self.inner.restore_prepare(r).await
    }
    async fn restore_resume(&self, id: &str) -> Result<RestoreReply, ClientError> {
        self.inner.restore_resume(id).await
    }
    async fn restore_abort(&self, id: &str) -> Result<(), ClientError> {
        self.inner.restore_abort(id).await
    }
    fn is_not_found(e: &ClientError) -> bool {
        e.kind() == Some(ErrorKind::NotFound)
    }
}

/// Every VM of the slice is running and its guest answers on its control channel (a
/// guest whose vCPUs are stuck cannot).
async fn all_answer(s: &Slice, what: &str) {
    for vm in &s.vms {
        let c = &s.clients[vm.host];
        let d = c.domain(&vm.name).await.unwrap();
        assert_eq!(d.state, DomainState::Running, "{what}: {d:?}");
        let r = tokio::time::timeout(Duration::from_secs(30), c.guest(&vm.name, &serde_json::json!({"op": "hello"})))
            .await
            .unwrap_or_else(|_| panic!("{what}: guest {} does not answer within 30 s", vm.name))
            .unwrap_or_else(|e| panic!("{what}: guest {}: {e}", vm.name));
        assert_eq!(r["ok"], serde_json::json!(true), "{what}: {}: {r}", vm.name);
    }
}

/// Waits (bounded) until `dir` is gone.
async fn wait_gone(dir: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while dir.exists() {
        assert!(Instant::now() < deadline, "{} still there after {timeout:?}", dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_during_a_save() {
    let t0 = Instant::now();
    let mut lab = tokio::task::block_in_place(|| Lab::up(slice::lab_options())).expect("lab up");
    let snaps = lab.hosts[0].state_dir().join("snapshots");
    // Declared after the lab: dropped (unmounted) before the lab removes its directory.
    let tmpfs = Tmpfs::mount(&snaps, 64);
    // The agent runs in a mount namespace of its own (`ip netns exec`), copied when it
    // starts, and mounts do not propagate into it here: restart it (no VM yet) so that it
    // sees the tmpfs. Resizing and the files are the file system's, seen by both.
    lab.kill_agent(0);
    tokio::task::block_in_place(|| lab.start_agent(0)).expect("agent restart");
    let pid = lab.hosts[0].pid.expect("agent pid");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        mounts.lines().any(|l| l.split_whitespace().nth(4) == Some(snaps.to_str().unwrap())),
        "the agent does not see the tmpfs at {}",
        snaps.display()
    );

    let s = slice::three_vm_slice(&lab, 128).await.expect("slice");
    let w = Workloads::start(
        &s.clients,
        &s.vms,
        WorkloadOptions { mem_mib: Some(32), mem_rate_mib_s: 50, ..Default::default() },
    )
    .await
    .expect("workloads");
    w.wait_flowing(Duration::from_secs(60)).await.unwrap();
    eprintln!("slice up in {:?}", t0.elapsed());
    let req = CutRequest { deadline_ms: Some(30_000), ..Default::default() };

    // 1. Too little room for vm1's and vm2's images (2 x 128 MiB + 10 %) in 64 MiB:
    //    refused at prepare, nothing changed.
    let epoch = slice::next_epoch(&s).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let e = format!("{:#}", slice::snapshot(&s, &id, epoch, &req).await.expect_err("prepare must refuse"));
    eprintln!("too small: {e}");
    assert!(e.contains("Not enough space") && e.contains(snaps.to_str().unwrap()), "{e}");
    all_answer(&s, "after the refused prepare").await;

    // 2. Room enough at prepare, filled before the save.
    tmpfs.resize(320);
    let filler = snaps.join("filler");
    let parts: Vec<HostPart<FillAfterPrepare>> = s
        .hosts()
        .into_iter()
        .map(|h| HostPart {
            client: FillAfterPrepare { inner: s.clients[h].clone(), filler: (h == 0).then(|| filler.clone()) },
            host: format!("host{}", h + 1),
            domains: s.names_on(h),
        })
        .collect();
    let epoch = slice::next_epoch(&s).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let t = Instant::now();
    let res =
        tokio::time::timeout(Duration::from_secs(60), coordinator::snapshot_slice(&parts, &id, epoch, &req, |_| {}))
            .await
            .expect("the snapshot on a full disk did not end within 60 s");
    let e = slice::chain(&res.expect_err("a snapshot whose disk filled up must fail"));
    eprintln!("full disk: failed in {:?}: {e}", t.elapsed());
    assert!(e.to_lowercase().contains("no space left on device"), "the error must name the lack of space: {e}");
    all_answer(&s, "after the failed snapshot").await;
    let rep = w.check().await;
    eprintln!("after the failed snapshot: {rep}");
    assert!(rep.is_ok(), "{rep}");
    for h in s.hosts() {
        wait_gone(&lab.hosts[h].state_dir().join("snapshots").join(&id), Duration::from_secs(30)).await;
    }

    // 3. Space freed: the next snapshot completes.
    std::fs::remove_file(&filler).unwrap();
    let epoch = slice::next_epoch(&s).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let taken = slice::snapshot(&s, &id, epoch, &req).await.expect("snapshot after the space was freed");
    eprintln!("after freeing: snapshot of {} MiB images committed", taken.memory_bytes() >> 20);
    assert!(taken.commit_of(0).is_some_and(|c| c.domains.len() == 2), "{:?}", taken.snap.hosts);
    all_answer(&s, "after the next snapshot").await;
    let rep = w.check().await;
    assert!(rep.is_ok(), "{rep}");
    slice::delete(&s, &taken).await.expect("delete");
    eprintln!("done in {:?}", t0.elapsed());
    drop(tmpfs);
    tokio::task::block_in_place(|| lab.down());
}
