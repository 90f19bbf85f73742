//! The main job: a whole slice through the AM API, snapshotted live, damaged, restored and
//! verified. `vnsnap-testbed demo` runs it; `testbed/tests/am_snapshot.rs` runs the same
//! scenario as the snapshot issue's acceptance test.

use crate::amlab::{cred, geni_code, rspec_opts, wait_for, AmClient, AmLabOptions, AmTestbed, TestSlice};
use crate::checker::{Report, VmRef, WorkloadOptions, Workloads};
use serde_json::json;
use std::time::{Duration, Instant};
use vnsnap_am::xmlrpc::Value;
use vnsnap_proto::client::AgentClient;

/// Three VMs on two links: a LAN of all three (10.40.0.0/24) and a point-to-point link
/// vm2-vm3 (10.41.0.0/24), as omni or geni-lib would send it.
pub fn request_rspec(mem_mib: u64) -> String {
    let node = |id: &str, ifs: &[(&str, &str)]| {
        let mut s = format!(
            "  <node client_id=\"{id}\" exclusive=\"false\">\n    <sliver_type name=\"emulab-xen\"><emulab:xen cores=\"1\" ram=\"{mem_mib}\"/></sliver_type>\n"
        );
        for (ifid, ip) in ifs {
            s += &format!("    <interface client_id=\"{ifid}\"><ip address=\"{ip}\" netmask=\"255.255.255.0\" type=\"ipv4\"/></interface>\n");
        }
        s + "  </node>\n"
    };
    let link = |id: &str, refs: &[&str]| {
        let r: String = refs.iter().map(|x| format!("<interface_ref client_id=\"{x}\"/>")).collect();
        format!("  <link client_id=\"{id}\">{r}</link>\n")
    };
    format!(
        "<rspec type=\"request\" xmlns=\"http://www.geni.net/resources/rspec/3\" xmlns:emulab=\"http://www.protogeni.net/resources/rspec/ext/emulab/1\">\n{}{}{}{}{}</rspec>\n",
        node("vm1", &[("vm1:if0", "10.40.0.1")]),
        node("vm2", &[("vm2:if0", "10.40.0.2"), ("vm2:if1", "10.41.0.2")]),
        node("vm3", &[("vm3:if0", "10.40.0.3"), ("vm3:if1", "10.41.0.3")]),
        link("lan0", &["vm1:if0", "vm2:if0", "vm3:if0"]),
        link("link1", &["vm2:if1", "vm3:if1"]),
    )
}

/// The slice's domains on the agents, found by their addresses, in ring order vm1-vm2-vm3.
pub async fn vm_refs(clients: &[AgentClient]) -> anyhow::Result<Vec<VmRef>> {
    let mut vms = Vec::new();
    for (h, c) in clients.iter().enumerate() {
        for d in c.domains().await? {
            let ips = d
                .spec
                .nics
                .iter()
                .flat_map(|n| n.ips.iter().map(move |ip| (n.segment, ip.split('/').next().unwrap_or("").to_string())))
                .collect();
            vms.push(VmRef { host: h, name: d.name.clone(), ips });
        }
    }
    vms.sort_by_key(|v: &VmRef| v.ips.iter().find(|(_, ip)| ip.starts_with("10.40.")).map(|x| x.1.clone()));
    Ok(vms)
}

/// A slice on a running AM, driven as an experimenter's tool would.
pub struct DemoSlice<'a> {
    /// The testbed.
    pub tb: &'a AmTestbed,
    /// The slice.
    pub slice: TestSlice,
    client: Option<AmClient>,
}

impl Drop for DemoSlice<'_> {
    fn drop(&mut self) {
        // The XML-RPC client owns a blocking runtime, which must not be dropped on an
        // async worker thread.
        if let Some(c) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                tokio::task::block_in_place(move || drop(c));
            }
        }
    }
}

impl std::fmt::Debug for DemoSlice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoSlice").field("slice", &self.slice.urn).finish()
    }
}

fn value(v: Value, what: &str) -> anyhow::Result<Value> {
    if geni_code(&v) != Some(0) {
        anyhow::bail!("{what} failed: {v:?}");
    }
    v.get("value").cloned().ok_or_else(|| anyhow::anyhow!("{what}: no value"))
}

impl<'a> DemoSlice<'a> {
    /// A new slice at the clearinghouse.
    pub fn new(tb: &'a AmTestbed, name: &str) -> anyhow::Result<DemoSlice<'a>> {
        Ok(DemoSlice { tb, slice: tb.slice(name)?, client: Some(tb.v3()?) })
    }

    fn creds(&self) -> Value {
        Value::Array(vec![cred(&self.slice.cred_xml)])
    }

    fn urns(&self) -> Value {
        Value::Array(vec![Value::str(&self.slice.urn)])
    }

    /// One AM API v3 call on this slice (blocking; call from a blocking context).
    pub fn call(&self, method: &str, params: &[Value]) -> anyhow::Result<Value> {
        let c = self.client.as_ref().ok_or_else(|| anyhow::anyhow!("client gone"))?;
        value(c.call(method, params)?, method)
    }

    /// Allocate + Provision + geni_start.
    pub fn create(&self, rspec: &str) -> anyhow::Result<()> {
        let no = Value::structure::<&str>([]);
        self.call("Allocate", &[Value::str(&self.slice.urn), self.creds(), Value::str(rspec), no.clone()])?;
        self.call("Provision", &[self.urns(), self.creds(), rspec_opts(vec![])])?;
        self.call("PerformOperationalAction", &[self.urns(), self.creds(), Value::str("geni_start"), no])?;
        Ok(())
    }

    /// Operational states of the slivers.
    pub fn states(&self) -> anyhow::Result<Vec<String>> {
        let st = self.call("Status", &[self.urns(), self.creds(), Value::structure::<&str>([])])?;
        Ok(st
            .get("geni_slivers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|s| s.get("geni_operational_status").and_then(Value::as_str).unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits (polling Status, as omni does) until all `n` slivers are `geni_ready`.
    pub fn wait_ready(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        wait_for(limit, Duration::from_millis(250), || {
            let st = self.states().ok()?;
            (st.len() == n && st.iter().all(|x| x == "geni_ready")).then_some(())
        })
        .ok_or_else(|| anyhow::anyhow!("slice not geni_ready within {limit:?}: {:?}", self.states()))
    }

    /// POA `vnsnap_snapshot`; returns the snapshot URN.
    pub fn snapshot(&self, name: &str) -> anyhow::Result<String> {
        let opts = Value::structure([("vnsnap_snapshot_name", Value::str(name))]);
        let r =
            self.call("PerformOperationalAction", &[self.urns(), self.creds(), Value::str("vnsnap_snapshot"), opts])?;
        r.as_array()
            .and_then(|a| a.first())
            .and_then(|s| s.get("vnsnap_snapshot_urn"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("POA reply has no vnsnap_snapshot_urn: {r:?}"))
    }

    /// POA `vnsnap_restore`.
    pub fn restore(&self, snapshot_urn: &str) -> anyhow::Result<()> {
        let opts = Value::structure([("vnsnap_snapshot_urn", Value::str(snapshot_urn))]);
        self.call("PerformOperationalAction", &[self.urns(), self.creds(), Value::str("vnsnap_restore"), opts])?;
        Ok(())
    }

    /// `ListSnapshots` entries.
    pub fn list(&self) -> anyhow::Result<Vec<Value>> {
        let l =
            self.call("ListSnapshots", &[Value::str(&self.slice.urn), self.creds(), Value::structure::<&str>([])])?;
        Ok(l.as_array().map(|a| a.to_vec()).unwrap_or_default())
    }

    /// `DescribeSnapshot`.
    pub fn describe(&self, urn: &str) -> anyhow::Result<Value> {
        self.call("DescribeSnapshot", &[Value::str(urn), self.creds(), Value::structure::<&str>([])])
    }

    /// `Delete` of the whole slice.
    pub fn delete(&self) -> anyhow::Result<()> {
        self.call("Delete", &[self.urns(), self.creds(), Value::structure::<&str>([])])?;
        Ok(())
    }
}

/// What the main job measured.
#[derive(Debug)]
pub struct Summary {
    /// Per VM: name, host, pause (µs).
    pub pauses: Vec<(String, String, u64)>,
    /// Skew between first and last cut (µs).
    pub skew_us: u64,
    /// Snapshot time (POA until ready).
    pub snapshot_s: f64,
    /// Restore time (POA until ready).
    pub restore_s: f64,
    /// Invariants after the snapshot and after the restore.
    pub after_snapshot: Report,
    /// Invariants after the restore.
    pub after_restore: Report,
    /// Frames held / recorded / dropped at the cut.
    pub frames: (u64, u64, u64),
    /// The slice (still there with `keep`) and the snapshot taken of it.
    pub slice: TestSlice,
    /// URN of the snapshot restored.
    pub snapshot_urn: String,
}

fn num(v: &Value, k: &str) -> u64 {
    match v.get(k) {
        Some(Value::Int(i)) => *i as u64,
        Some(Value::Str(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Runs the whole scenario on a testbed; `say` reports progress.
pub async fn scenario(tb: &AmTestbed, say: &(dyn Fn(&str) + Sync), keep: bool) -> anyhow::Result<Summary> {
    let blocking = |f: &mut dyn FnMut() -> anyhow::Result<()>| tokio::task::block_in_place(f);
    let s = tokio::task::block_in_place(|| DemoSlice::new(tb, "demo"))?;
    say("creating a 3-VM slice on 2 hosts through the AM API (Allocate, Provision, geni_start)");
    blocking(&mut || s.create(&request_rspec(128)))?;
    blocking(&mut || s.wait_ready(3, Duration::from_secs(300)))?;
    let clients: Vec<AgentClient> = (0..tb.lab.hosts.len()).map(|i| tb.lab.client(i)).collect::<Result<_, _>>()?;
    let vms = vm_refs(&clients).await?;
    say("starting the workloads: TCP token ring, UDP sequence streams, disk/memory counters");
    let w = Workloads::start(&clients, &vms, WorkloadOptions::default()).await?;
    w.wait_flowing(Duration::from_secs(60)).await?;

    say("taking a live snapshot (POA vnsnap_snapshot)");
    let t = Instant::now();
    let mut urn = String::new();
    blocking(&mut || {
        urn = s.snapshot("before-damage")?;
        s.wait_ready(3, Duration::from_secs(300))
    })?;
    let snapshot_s = t.elapsed().as_secs_f64();
    let mut d = Value::Nil;
    blocking(&mut || {
        d = s.describe(&urn)?;
        Ok(())
    })?;
    if d.get("vnsnap_state").and_then(Value::as_str) != Some("complete") {
        anyhow::bail!("snapshot not complete: {d:?}");
    }
    let pauses = d
        .get("vnsnap_vms")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| {
                    (
                        v.get("geni_client_id").and_then(Value::as_str).unwrap_or("").to_string(),
                        v.get("vnsnap_host").and_then(Value::as_str).unwrap_or("").to_string(),
                        num(v, "vnsnap_pause_us"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let after_snapshot = w.check().await;

    say("damaging the slice: stopping vm1's ring and UDP workloads, scribbling over vm2's counter file");
    let (c1, c2) = (&clients[vms[0].host], &clients[vms[1].host]);
    c1.guest(&vms[0].name, &json!({"op": "ring_stop"})).await?;
    c1.guest(&vms[0].name, &json!({"op": "udp_stop"})).await?;
    c2.guest(
        &vms[1].name,
        &json!({"op": "exec", "argv": ["sh", "-c", "echo scribble > /data/counter; sync"], "timeout_ms": 5000}),
    )
    .await?;

    say("restoring the snapshot (POA vnsnap_restore)");
    let t = Instant::now();
    blocking(&mut || {
        s.restore(&urn)?;
        s.wait_ready(3, Duration::from_secs(300))
    })?;
    let restore_s = t.elapsed().as_secs_f64();
    w.wait_flowing(Duration::from_secs(60)).await?;
    say("verifying every invariant");
    let after_restore = w.check().await;
    // With `keep` the slice (and its workloads) stay for the person trying the AM.
    if !keep {
        blocking(&mut || s.delete())?;
    }
    Ok(Summary {
        pauses,
        skew_us: num(&d, "vnsnap_skew_us"),
        snapshot_s,
        restore_s,
        after_snapshot,
        after_restore,
        frames: (num(&d, "vnsnap_frames_held"), num(&d, "vnsnap_frames_recorded"), num(&d, "vnsnap_frames_dropped")),
        slice: s.slice.clone(),
        snapshot_urn: urn,
    })
}

/// The main job: brings up AM + 2 agents + clearinghouse, runs [`scenario`], prints a
/// report, tears everything down. Fails unless every invariant holds. With `keep` the lab
/// and the slice stay up, the job prints how to reach them with the `vnsnap` CLI, and
/// tears down on Ctrl-C.
pub fn main_job(keep: bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let say = |m: &str| println!("[{:6.1}s] {m}", t0.elapsed().as_secs_f64());
    say("starting the lab: test clearinghouse, AM, 2 agent hosts in network namespaces");
    let tb = AmTestbed::up(2, AmLabOptions::default())?;
    say(&format!("AM at {} (v3) and {} (v2)", tb.am.url_v3(), tb.am.url_v2()));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(3).enable_all().build()?;
    let sum = rt.block_on(scenario(&tb, &say, keep))?;
    println!("\n=== vnsnap main job report");
    for (vm, host, p) in &sum.pauses {
        println!("  {vm:<4} on {host:<6} paused {:>7.2} ms", *p as f64 / 1000.0);
    }
    println!(
        "  cut skew {:.2} ms; frames held {} recorded {} dropped {}",
        sum.skew_us as f64 / 1000.0,
        sum.frames.0,
        sum.frames.1,
        sum.frames.2
    );
    println!("  snapshot (POA to geni_ready) {:.1} s; restore {:.1} s", sum.snapshot_s, sum.restore_s);
    let verdict = |r: &Report| {
        if r.is_ok() {
            "all invariants hold".to_string()
        } else {
            format!("VIOLATED: {:?}", r.violations)
        }
    };
    println!("  after snapshot: {}", verdict(&sum.after_snapshot));
    println!("  after restore:  {}", verdict(&sum.after_restore));
    println!("  total {:.1} s", t0.elapsed().as_secs_f64());
    if !sum.after_snapshot.is_ok() || !sum.after_restore.is_ok() {
        anyhow::bail!("invariants violated");
    }
    if keep {
        print_reach(&tb)?;
        rt.block_on(tokio::signal::ctrl_c())?;
        println!("tearing the lab down");
    }
    Ok(())
}

/// How to reach a kept lab: the AM, Alice's files and the slice, with `vnsnap` commands.
fn print_reach(tb: &AmTestbed) -> anyhow::Result<()> {
    let slice = tb.slice("demo")?;
    let cli = crate::lab::bin("vnsnap");
    let base = format!(
        "{} -a {} --cert {} --key {} --cred {}",
        cli.display(),
        tb.am.url_v3(),
        tb.alice_chain.display(),
        tb.alice.key.display(),
        slice.cred.display()
    );
    println!("\n=== the lab stays up (Ctrl-C tears it down)");
    println!("  AM:    {} (v3), {} (v2)", tb.am.url_v3(), tb.am.url_v2());
    println!(
        "  user:  {} (certificate chain {}, key {})",
        tb.alice.urn,
        tb.alice_chain.display(),
        tb.alice.key.display()
    );
    println!("  slice: {} (credential {})", slice.urn, slice.cred.display());
    println!("  try:");
    let s = &slice.urn;
    for cmd in [
        format!("status {s}"),
        format!("snapshots {s}"),
        format!("snapshot --name mine {s}"),
        "snapshot-info SNAPSHOT_URN".to_string(),
        format!("restore {s} SNAPSHOT_URN"),
        "delete-snapshot SNAPSHOT_URN".to_string(),
    ] {
        println!("    {base} {cmd}");
    }
    Ok(())
}
