//! `vnsnap-testbed bench am`: throughput and latency of the AM API with real TLS and
//! credential checks, against a real vnsnap-am with a lab behind it.
//!
//! For each method (GetVersion, ListResources, Status of a slice with a running VM) and each
//! concurrency level, `concurrency` client tasks call the method back to back for the
//! duration, each over its own kept-alive mTLS connection. Prints a table and writes JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vnsnap_am::xmlrpc::{self, Value};

use crate::amlab::{cred, identity_pem, rspec_opts, AmClient, AmLabOptions, AmTestbed};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchAmOptions {
    /// How long each (method, concurrency) cell runs.
    pub duration: Duration,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Lab hosts.
    pub hosts: usize,
    /// Where the JSON report goes.
    pub out: PathBuf,
}

impl Default for BenchAmOptions {
    fn default() -> Self {
        BenchAmOptions {
            duration: Duration::from_secs(20),
            concurrency: vec![1, 16, 64],
            hosts: 1,
            out: crate::image::repo_root().join("target/bench/am.json"),
        }
    }
}

/// One measured cell.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cell {
    /// Method.
    pub method: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls (transport errors or non-zero geni_code).
    pub errors: u64,
    /// Successful calls per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run_cell(
    url: &str,
    pem: &[u8],
    method: &str,
    params: Arc<Vec<Value>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Cell> {
    let body = bytes_of(method, &params);
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..concurrency {
        // One client (one connection) per task, like independent experimenters.
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .identity(reqwest::Identity::from_pem(pem)?)
            .danger_accept_invalid_certs(true)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()?;
        let url = url.to_string();
        let body = body.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while start.elapsed() < duration {
                let t = Instant::now();
                let r = http.post(&url).body(body.clone()).send().await;
                let good = match r {
                    Ok(resp) => match resp.bytes().await {
                        Ok(b) => matches!(
                            xmlrpc::parse_response(&b),
                            Ok(Ok(v)) if crate::amlab::geni_code(&v) == Some(0)
                        ),
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if good {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(Cell {
        method: method.to_string(),
        concurrency,
        ok: lat.len() as u64,
        errors,
        rps: lat.len() as f64 / elapsed,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    })
}

fn bytes_of(method: &str, params: &[Value]) -> bytes_body::Body {
    bytes_body::Body(Arc::new(xmlrpc::write_call(method, params)))
}

mod bytes_body {
    use std::sync::Arc;

    /// A request body shared by all calls of a cell.
    #[derive(Clone, Debug)]
    pub struct Body(pub Arc<Vec<u8>>);

    impl From<Body> for reqwest::Body {
        fn from(b: Body) -> reqwest::Body {
            reqwest::Body::from(b.0.as_ref().clone())
        }
    }
}

/// Brings up a lab and an AM, starts one VM slice, and measures. Returns the JSON report
/// (also written to `opts.out`) and prints a table.
pub fn bench_am(opts: &BenchAmOptions) -> anyhow::Result<serde_json::Value> {
    let tb = AmTestbed::up(opts.hosts, AmLabOptions { vm_memory_mib: 128, ..Default::default() })?;
    let slice = tb.slice("bench1")?;
    let c: AmClient = tb.v3()?;
    let creds = Value::Array(vec![cred(&slice.cred_xml)]);
    let urns = Value::Array(vec![Value::str(&slice.urn)]);
    let one = r#"<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">
  <node client_id="b1" exclusive="false"><sliver_type name="vnsnap-vm"/></node></rspec>"#;
    let empty = || Value::structure::<&str>([]);
    let must = |v: Value, what: &str| -> anyhow::Result<()> {
        anyhow::ensure!(crate::amlab::geni_code(&v) == Some(0), "{what}: {v:?}");
        Ok(())
    };
    must(c.call("Allocate", &[Value::str(&slice.urn), creds.clone(), Value::str(one), empty()])?, "Allocate")?;
    must(c.call("Provision", &[urns.clone(), creds.clone(), rspec_opts(vec![])])?, "Provision")?;
    must(
        c.call("PerformOperationalAction", &[urns.clone(), creds.clone(), Value::str("geni_start"), empty()])?,
        "POA",
    )?;
    let ready = crate::amlab::wait_for(Duration::from_secs(240), Duration::from_secs(1), || {
        let st = c.call("Status", &[urns.clone(), creds.clone(), empty()]).ok()?;
        let s = st.get("value")?.get("geni_slivers")?.as_array()?.to_vec();
        s.iter().all(|x| x.get("geni_operational_status") == Some(&Value::str("geni_ready"))).then_some(())
    });
    anyhow::ensure!(ready.is_some(), "bench VM never became ready");

    let user_cred = std::fs::read_to_string(&tb.user_cred)?;
    let methods: Vec<(&str, Vec<Value>)> = vec![
        ("GetVersion", vec![]),
        ("ListResources", vec![Value::Array(vec![cred(&user_cred)]), rspec_opts(vec![])]),
        ("Status", vec![urns.clone(), creds.clone(), empty()]),
    ];
    let pem = identity_pem(&tb.alice)?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut cells = Vec::new();
    println!("{:<14} {:>5} {:>9} {:>8} {:>8} {:>8}", "method", "conc", "req/s", "p50 ms", "p99 ms", "errors");
    for (m, params) in &methods {
        let params = Arc::new(params.clone());
        for &n in &opts.concurrency {
            let cell = rt.block_on(run_cell(&tb.am.url_v3(), &pem, m, params.clone(), n, opts.duration))?;
            println!(
                "{:<14} {:>5} {:>9.1} {:>8.2} {:>8.2} {:>8}",
                cell.method, cell.concurrency, cell.rps, cell.p50_ms, cell.p99_ms, cell.errors
            );
            cells.push(cell);
        }
    }
    let _ = c.call("Delete", &[urns, creds, empty()]);
    let report = json!({
        "duration_s": opts.duration.as_secs_f64(),
        "hosts": opts.hosts,
        "tls": "rustls, client certificate, TLS 1.3",
        "credential_checks": "per call (chain validation + verified-credential cache)",
        "cells": cells,
    });
    if let Some(d) = opts.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", opts.out.display());
    Ok(report)
}

/// `vnsnap-testbed bench am [--secs N] [--conc 1,16,64] [--hosts N] [--out PATH]`: parses the
/// arguments after `am`, runs [`bench_am`] (which prints the table) and returns the report.
pub fn cli(args: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut o = BenchAmOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--secs" => o.duration = Duration::from_secs_f64(val()?.parse()?),
            "--conc" => {
                o.concurrency = val()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--hosts" => o.hosts = val()?.parse()?,
            "--out" => o.out = PathBuf::from(val()?),
            other => anyhow::bail!("unknown argument {other} (use --secs, --conc, --hosts, --out)"),
        }
    }
    bench_am(&o)
}
