//! Issue 7 "Xen domains", acceptance 1: a nested Xen host (real Xen 4.17 under QEMU TCG,
//! the agent in its dom0) and a QEMU host in one lab; through the AM API a slice with one
//! VM on each host and one link between them is provisioned, and the two VMs ping each
//! other across the Xen vif, both switches and the tunnel.

#[allow(unused_imports)]
mod common;

use common::{ping, wait_ready};
use std::time::{Duration, Instant};
use vnsnap_testbed::amlab::{AmLabOptions, AmTestbed};
use vnsnap_testbed::lab::LabOptions;
use vnsnap_testbed::snapshot_demo::DemoSlice;

/// One VM bound to each host (`component_name`), one link.
fn mixed_rspec() -> String {
    let node = |id: &str, host: &str, ip: &str| {
        format!(
            "  <node client_id=\"{id}\" component_name=\"{host}\" exclusive=\"false\">\n    <sliver_type name=\"emulab-xen\"><emulab:xen cores=\"1\" ram=\"128\"/></sliver_type>\n    <interface client_id=\"{id}:if0\"><ip address=\"{ip}\" netmask=\"255.255.255.0\" type=\"ipv4\"/></interface>\n  </node>\n"
        )
    };
    format!(
        "<rspec type=\"request\" xmlns=\"http://www.geni.net/resources/rspec/3\" xmlns:emulab=\"http://www.protogeni.net/resources/rspec/ext/emulab/1\">\n{}{}  <link client_id=\"link0\"><interface_ref client_id=\"xvm:if0\"/><interface_ref client_id=\"qvm:if0\"/></link>\n</rspec>\n",
        node("xvm", "host1", "10.50.0.1"),
        node("qvm", "host2", "10.50.0.2"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_xen_and_qemu_slice_through_the_am() {
    let t0 = Instant::now();
    let lab_opts = LabOptions { hosts: 2, xen_hosts: vec![1], ..Default::default() };
    let tb = tokio::task::block_in_place(|| AmTestbed::up_lab(lab_opts, AmLabOptions::default())).expect("testbed");
    eprintln!("[{:.0}s] nested Xen host and QEMU host up", t0.elapsed().as_secs_f64());
    let (x, q) = (tb.lab.client(0).unwrap(), tb.lab.client(1).unwrap());
    assert_eq!(x.host().await.unwrap().driver, "xen");
    assert_eq!(q.host().await.unwrap().driver, "qemu");

    let s = tokio::task::block_in_place(|| DemoSlice::new(&tb, "mixed")).unwrap();
    tokio::task::block_in_place(|| s.create(&mixed_rspec())).expect("allocate, provision, start");
    tokio::task::block_in_place(|| s.wait_ready(2, Duration::from_secs(300))).expect("slice ready");
    let xvm = x.domains().await.unwrap().pop().expect("a domain on the Xen host");
    let qvm = q.domains().await.unwrap().pop().expect("a domain on the QEMU host");
    wait_ready(&x, &[&xvm.name], Duration::from_secs(300)).await;
    wait_ready(&q, &[&qvm.name], Duration::from_secs(120)).await;
    eprintln!("[{:.0}s] both guests answer", t0.elapsed().as_secs_f64());

    assert_eq!(ping(&q, &qvm.name, "10.50.0.1").await, 3, "QEMU VM -> Xen VM");
    assert_eq!(ping(&x, &xvm.name, "10.50.0.2").await, 3, "Xen VM -> QEMU VM");
    let console = x.console(&xvm.name).await.unwrap();
    assert!(console.contains("vnsnap-init: ready"), "Xen console log via xenconsoled:\n{console}");
    let sx = x.switch().await.unwrap();
    assert!(sx.tunnels.iter().any(|t| t.tx_frames > 0 && t.rx_frames > 0), "{sx:?}");
    eprintln!("[{:.0}s] pings both ways", t0.elapsed().as_secs_f64());
    tokio::task::block_in_place(|| s.delete()).expect("delete");
}
