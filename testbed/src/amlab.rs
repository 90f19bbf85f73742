//! Runs a real `vnsnap-am` process for tests and benchmarks, and talks to it.
//!
//! [`AmLab::start`] writes a configuration (agents, cluster TLS, image catalog, a server
//! certificate issued by the test clearinghouse, the clearinghouse CA as GENI trust root),
//! starts the daemon, waits until it prints `listening on`, and kills it on drop.
//! [`AmClient`] is the AM's own XML-RPC-over-mTLS client ([`vnsnap_am::client`]) presenting a
//! test identity.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use vnsnap_am::xmlrpc::Value;

use crate::ch::{CertSpec, Clearinghouse, Identity};

/// Errors of the AM lab.
#[derive(Debug, thiserror::Error)]
pub enum AmLabError {
    /// File or process I/O.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The clearinghouse failed.
    #[error("Clearinghouse")]
    Ch(#[from] crate::ch::ChError),
    /// The daemon did not come up.
    #[error("vnsnap-am did not start: {0}")]
    Start(String),
    /// An XML-RPC call failed at the transport or codec level.
    #[error("XML-RPC call {0} failed: {1}")]
    Call(String, String),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> AmLabError {
    let what = what.to_string();
    move |e| AmLabError::Io(what, e)
}

/// A host agent the AM should use.
#[derive(Debug, Clone)]
pub struct AgentRef {
    /// Host name.
    pub name: String,
    /// `ip:port` of its API.
    pub address: String,
}

/// What the AM is configured with.
#[derive(Debug, Clone)]
pub struct AmLabOptions {
    /// Agents (may be empty for API-only tests).
    pub agents: Vec<AgentRef>,
    /// Cluster CA, AM client cert and key for the agents; `None` → dummies from the CH.
    pub cluster_tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Guest kernel, initrd and (optional) data disk.
    pub image: (PathBuf, PathBuf, Option<PathBuf>),
    /// Allocation timeout (seconds).
    pub allocation_timeout_secs: i64,
    /// Default sliver lifetime (seconds).
    pub default_lifetime_secs: i64,
    /// Expiry task period (seconds).
    pub expiry_check_secs: u64,
    /// Default VM RAM (MiB).
    pub vm_memory_mib: u64,
}

impl Default for AmLabOptions {
    fn default() -> Self {
        AmLabOptions {
            agents: Vec::new(),
            cluster_tls: None,
            image: (PathBuf::from("/nonexistent/vmlinuz"), PathBuf::from("/nonexistent/initrd"), None),
            allocation_timeout_secs: 600,
            default_lifetime_secs: 3600,
            expiry_check_secs: 1,
            vm_memory_mib: 256,
        }
    }
}

/// A running vnsnap-am.
#[derive(Debug)]
pub struct AmLab {
    dir: PathBuf,
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// The configuration file.
    pub config: PathBuf,
    /// The AM's URN authority.
    pub authority: String,
    /// Daemon log (stderr).
    pub log: PathBuf,
}

/// The vnsnap-am binary: `$VNSNAP_AM_BIN`, else `target/debug/vnsnap-am` as built by
/// `cargo build` (or `cargo test`, which builds workspace binaries). Only a missing binary is
/// built here: a nested `cargo build` can wait forever on the build-directory lock that a
/// running `cargo test` holds.
pub fn am_binary() -> Result<PathBuf, AmLabError> {
    if let Some(p) = std::env::var_os("VNSNAP_AM_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = crate::lab::bin("vnsnap-am");
    if p.is_file() {
        return Ok(p);
    }
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let _ = Command::new(cargo)
            .args(["build", "-q", "-p", "vnsnap-am", "--bin", "vnsnap-am"])
            .current_dir(crate::image::repo_root())
            .status();
    });
    if p.is_file() {
        Ok(p)
    } else {
        Err(AmLabError::Start(format!("{} missing (cargo build -p vnsnap-am)", p.display())))
    }
}

fn free_port() -> Result<u16, AmLabError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind"))?;
    Ok(l.local_addr().map_err(io("local_addr"))?.port())
}

fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

impl AmLab {
    /// Writes the configuration under `dir` and starts the AM.
    pub fn start(dir: &Path, ch: &Clearinghouse, opts: &AmLabOptions) -> Result<AmLab, AmLabError> {
        std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
        let authority = "vnsnap-am.test".to_string();
        let server =
            ch.issue(&format!("urn:publicid:IDN+{authority}+authority+am"), "am-server", &CertSpec::default())?;
        let (ca, cert, key) = match &opts.cluster_tls {
            Some(t) => t.clone(),
            None => (ch.ca().cert.clone(), server.cert.clone(), server.key.clone()),
        };
        let port = free_port()?;
        let base_url = format!("https://127.0.0.1:{port}");
        let mut agents = String::new();
        for a in &opts.agents {
            agents.push_str(&format!("\n[[agents]]\nname = {:?}\naddress = {:?}\n", a.name, a.address));
        }
        let disk = opts.image.2.as_ref().map(|d| format!("disk = {}\n", q(d))).unwrap_or_default();
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
public_url = "{base_url}"
state_dir = {state}
authority = "{authority}"
server_cert = {scert}
server_key = {skey}
trust_roots = [{root}]
default_image = "vnsnap-guest"
agents = []

[cluster_tls]
ca = {ca}
cert = {cert}
key = {key}

[images.vnsnap-guest]
kernel = {kernel}
initrd = {initrd}
{disk}os = "Linux"
version = "busybox"
description = "vnsnap test guest"

[lifetimes]
default_secs = {life}
max_secs = 2592000
allocation_timeout_secs = {alloc}
expiry_check_secs = {check}

[vm]
vcpus = 1
memory_mib = {mem}
vcpu_overcommit = 8
"#,
            state = q(&dir.join("state")),
            scert = q(&server.cert),
            skey = q(&server.key),
            root = q(&ch.ca().cert),
            ca = q(&ca),
            cert = q(&cert),
            key = q(&key),
            kernel = q(&opts.image.0),
            initrd = q(&opts.image.1),
            life = opts.default_lifetime_secs,
            alloc = opts.allocation_timeout_secs,
            check = opts.expiry_check_secs,
            mem = opts.vm_memory_mib,
        );
        // TOML needs the agents array of tables after the top-level keys: replace the
        // placeholder `agents = []` when there are agents.
        let text = if agents.is_empty() { text } else { text.replace("agents = []\n", "") + &agents };
        let config = dir.join("am.toml");
        std::fs::write(&config, text).map_err(io(config.display()))?;
        let mut lab =
            AmLab { dir: dir.to_path_buf(), child: None, base_url, config, authority, log: dir.join("am.log") };
        lab.spawn()?;
        Ok(lab)
    }

    /// Starts the daemon (again) with the same configuration and state.
    pub fn spawn(&mut self) -> Result<(), AmLabError> {
        let bin = am_binary()?;
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(io(self.log.display()))?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", std::env::var("AM_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(io("spawn vnsnap-am"))?;
        let stdout = child.stdout.take().ok_or_else(|| AmLabError::Start("no stdout".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(()) => Ok(()),
            Err(_) => Err(AmLabError::Start(format!("no 'listening on' within 120 s; log:\n{}", self.log_tail()))),
        }
    }

    /// SIGKILLs the daemon (no cleanup on its side).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The v3 endpoint.
    pub fn url_v3(&self) -> String {
        format!("{}/am/3.0", self.base_url)
    }

    /// The v2 endpoint.
    pub fn url_v2(&self) -> String {
        format!("{}/am/2.0", self.base_url)
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for AmLab {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An XML-RPC client presenting a GENI identity's certificate chain.
#[derive(Debug, Clone)]
pub struct AmClient {
    inner: vnsnap_am::client::XmlRpcClient,
}

/// The TLS identity PEM (chain + key) of a CH identity.
pub fn identity_pem(id: &Identity) -> Result<Vec<u8>, AmLabError> {
    let mut pem = id.chain_pem()?.into_bytes();
    pem.push(b'\n');
    pem.extend(std::fs::read(&id.key).map_err(io(id.key.display()))?);
    Ok(pem)
}

/// A v3 credential struct for an XML credential.
pub fn cred(xml: &str) -> Value {
    Value::structure([
        ("geni_type", Value::str("geni_sfa")),
        ("geni_version", Value::str("3")),
        ("geni_value", Value::str(xml)),
    ])
}

/// `{geni_rspec_version: {type: GENI, version: 3}}` plus more options.
pub fn rspec_opts(extra: Vec<(&str, Value)>) -> Value {
    let mut v =
        vec![("geni_rspec_version", Value::structure([("type", Value::str("GENI")), ("version", Value::str("3"))]))];
    v.extend(extra);
    Value::structure(v)
}

impl AmClient {
    /// A client for `url` authenticating as `id`.
    pub fn new(url: &str, id: &Identity) -> Result<AmClient, AmLabError> {
        let inner = vnsnap_am::client::XmlRpcClient::new(url, &identity_pem(id)?, Duration::from_secs(300))
            .map_err(|e| AmLabError::Call("client".into(), e.to_string()))?;
        Ok(AmClient { inner })
    }

    /// Calls a method; `Err` for transport errors and XML-RPC faults.
    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value, AmLabError> {
        self.inner.call(method, params).map_err(|e| AmLabError::Call(method.into(), e.to_string()))
    }
}

/// The `geni_code` of a GENI return struct (`None` if the reply is not one).
pub fn geni_code(v: &Value) -> Option<i64> {
    match v.get("code")?.get("geni_code")? {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// Waits until `f` returns `Some`, polling every `every`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A whole system for AM tests: a lab of agents, a clearinghouse with a user and a slice,
/// credentials on disk, and a vnsnap-am using the lab.
#[derive(Debug)]
pub struct AmTestbed {
    /// The AM (dropped first: it talks to the lab).
    pub am: AmLab,
    /// The agents.
    pub lab: crate::lab::Lab,
    /// The clearinghouse.
    pub ch: Clearinghouse,
    /// The experimenter.
    pub alice: Identity,
    /// Alice's TLS chain (PEM file: cert then CA), as omni and geni-lib present it.
    pub alice_chain: PathBuf,
    /// Alice's user credential file.
    pub user_cred: PathBuf,
    /// Work directory.
    pub dir: PathBuf,
}

/// A slice of an [`AmTestbed`]: its URN and Alice's slice credential file.
#[derive(Debug, Clone)]
pub struct TestSlice {
    /// Slice URN.
    pub urn: String,
    /// Credential file.
    pub cred: PathBuf,
    /// Credential text.
    pub cred_xml: String,
}

impl AmTestbed {
    /// Brings up `hosts` agents and an AM configured with them.
    pub fn up(hosts: usize, opts: AmLabOptions) -> anyhow::Result<AmTestbed> {
        Self::up_lab(crate::lab::LabOptions { hosts, ..Default::default() }, opts)
    }

    /// Brings up a lab built with `lab_opts` (its `dir` is replaced by a short one of our
    /// own) and an AM configured with its agents; for labs that mix nested Xen hosts in.
    pub fn up_lab(lab_opts: crate::lab::LabOptions, opts: AmLabOptions) -> anyhow::Result<AmTestbed> {
        // A directory of our own: the default `target/labs/<id>` can be removed by another
        // process's lab teardown racing with our claim of the same id. Short, because QEMU's
        // unix socket paths under it must stay below 108 bytes.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lab_dir = PathBuf::from(format!("/tmp/vam-{}-{n}", std::process::id()));
        let lab = crate::lab::Lab::up(crate::lab::LabOptions { dir: Some(lab_dir), ..lab_opts })?;
        let dir = lab.dir.join("am-testbed");
        std::fs::create_dir_all(&dir)?;
        let ch = Clearinghouse::create(&dir.join("ch"), "geni:gpo:gcf")?;
        let alice = ch.user("alice", &CertSpec::default())?;
        let alice_chain = dir.join("alice-chain.pem");
        std::fs::write(&alice_chain, alice.chain_pem()?)?;
        let user_cred = dir.join("alice-user.cred");
        std::fs::write(&user_cred, ch.user_credential(&alice, &crate::ch::CredSpec::user_default())?)?;
        let opts = AmLabOptions {
            agents: lab.hosts.iter().map(|h| AgentRef { name: h.name.clone(), address: h.api() }).collect(),
            cluster_tls: Some((lab.ca.clone(), lab.client_cert.clone(), lab.client_key.clone())),
            image: (lab.kernel.clone(), lab.initrd.clone(), Some(lab.data_disk.clone())),
            ..opts
        };
        let am = AmLab::start(&dir.join("am"), &ch, &opts)?;
        Ok(AmTestbed { am, lab, ch, alice, alice_chain, user_cred, dir })
    }

    /// Creates a slice at the clearinghouse and writes Alice's slice credential.
    pub fn slice(&self, name: &str) -> anyhow::Result<TestSlice> {
        let s = self.ch.slice(None, name, &CertSpec::default())?;
        let xml = self.ch.slice_credential(&self.alice, &s, &crate::ch::CredSpec::default())?;
        let cred = self.dir.join(format!("{name}.cred"));
        std::fs::write(&cred, &xml)?;
        Ok(TestSlice { urn: s.urn, cred, cred_xml: xml })
    }

    /// A v3 client as Alice.
    pub fn v3(&self) -> Result<AmClient, AmLabError> {
        AmClient::new(&self.am.url_v3(), &self.alice)
    }

    /// A v2 client as Alice.
    pub fn v2(&self) -> Result<AmClient, AmLabError> {
        AmClient::new(&self.am.url_v2(), &self.alice)
    }
}

/// The request RSpec used by the system tests: three VMs on two links
/// (`vm1 -link0- vm2 -link1- vm3`), with addresses 10.10.1.0/24 and 10.10.2.0/24.
pub fn three_vm_rspec(mem_mib: u64) -> String {
    let node = |id: &str, ifaces: &[(&str, &str)]| {
        let mut s = format!(
            "  <node client_id=\"{id}\" exclusive=\"false\">\n    <sliver_type name=\"emulab-xen\"><emulab:xen cores=\"1\" ram=\"{mem_mib}\"/></sliver_type>\n"
        );
        for (ifid, ip) in ifaces {
            s.push_str(&format!(
                "    <interface client_id=\"{ifid}\"><ip address=\"{ip}\" netmask=\"255.255.255.0\" type=\"ipv4\"/></interface>\n"
            ));
        }
        s.push_str("  </node>\n");
        s
    };
    let link = |id: &str, a: &str, b: &str| {
        format!(
            "  <link client_id=\"{id}\"><interface_ref client_id=\"{a}\"/><interface_ref client_id=\"{b}\"/></link>\n"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rspec type=\"request\" xmlns=\"http://www.geni.net/resources/rspec/3\" xmlns:emulab=\"http://www.protogeni.net/resources/rspec/ext/emulab/1\">\n{}{}{}{}{}</rspec>\n",
        node("vm1", &[("vm1:if0", "10.10.1.1")]),
        node("vm2", &[("vm2:if0", "10.10.1.2"), ("vm2:if1", "10.10.2.2")]),
        node("vm3", &[("vm3:if0", "10.10.2.3")]),
        link("link0", "vm1:if0", "vm2:if0"),
        link("link1", "vm2:if1", "vm3:if0"),
    )
}

/// A Python venv with geni-lib from PyPI at `target/pyenv` (created on first use).
pub fn python_env() -> anyhow::Result<PathBuf> {
    let root = crate::image::repo_root();
    let env = root.join("target/pyenv");
    let py = env.join("bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import geni.minigcf.amapi3, geni.minigcf.amapi2"])
            .current_dir("/")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&py) {
        let st = Command::new("python3").arg("-m").arg("venv").arg(&env).status()?;
        anyhow::ensure!(st.success(), "python3 -m venv failed");
        // geni-lib imports six without declaring it.
        let st = Command::new(env.join("bin/pip")).args(["install", "-q", "geni-lib", "six"]).status()?;
        anyhow::ensure!(st.success(), "pip install geni-lib failed");
        anyhow::ensure!(ok(&py), "geni-lib does not import");
    }
    Ok(py)
}

/// Runs a test script from `testbed/tests/py` and parses its JSON output.
pub fn run_py(script: &str, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let py = python_env()?;
    let path = crate::image::repo_root().join("testbed/tests/py").join(script);
    // Not from inside site-packages/geni: it would shadow the standard `types` module.
    let out = Command::new(py).arg(&path).args(args).current_dir("/").output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).map_err(|e| {
        anyhow::anyhow!(
            "{script} {args:?}: bad output ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    anyhow::ensure!(
        out.status.success() && v["ok"] == true,
        "{script} {:?} failed: {v}\nstderr: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(v)
}
