//! The data disk: a small ext4 filesystem (made with `mke2fs -d`) converted
//! to a qcow2 base image.

use std::path::Path;
use std::process::Command;

use super::{run_tool, ImageError};

/// Size of the data filesystem.
pub const DATA_DISK_MIB: u64 = 64;

/// Text of `/data/README` in the guest.
pub const README: &str = "vnsnap data disk\n\
\n\
This ext4 filesystem is the guest's /data (virtio-blk /dev/vda). The base\n\
image is shared by all VMs; each VM writes to its own qcow2 overlay.\n\
/data/seed holds fixed content; /data/counter is written by the disk\n\
coherence workload of vnsnap-guest.\n";

/// Content of `/data/seed`: 4096 numbered lines, deterministic.
pub fn seed() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..4096u32 {
        s.push_str(&format!("vnsnap seed line {i:05}\n"));
    }
    s.into_bytes()
}

/// Builds `out` (qcow2) using `work` as scratch space.
pub fn build_data_disk(work: &Path, out: &Path) -> Result<(), ImageError> {
    let staging = work.join("data-root");
    std::fs::create_dir_all(&staging).map_err(|e| ImageError::io(&staging, e))?;
    let f = staging.join("README");
    std::fs::write(&f, README).map_err(|e| ImageError::io(&f, e))?;
    let f = staging.join("seed");
    std::fs::write(&f, seed()).map_err(|e| ImageError::io(&f, e))?;
    let raw = work.join("data.raw");
    let mut mk = Command::new("mke2fs");
    mk.args(["-q", "-F", "-t", "ext4", "-L", "vnsnap-data", "-m", "0"])
        .args(["-E", "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0"])
        .arg("-d")
        .arg(&staging)
        .arg(&raw)
        .arg(format!("{DATA_DISK_MIB}M"));
    run_tool(&mut mk)?;
    let mut conv = Command::new("qemu-img");
    conv.args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(out);
    run_tool(&mut conv)?;
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}
