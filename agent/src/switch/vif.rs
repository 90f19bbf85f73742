//! Port backend for Xen vifs: a domU NIC joins the switch like a QEMU NIC does.
//!
//! A switch port talks UDP to `127.0.0.1:<qemu_udp>`; for QEMU that is the `-netdev
//! dgram` end. For a Xen domU the agent puts a relay there: it owns a tap device in dom0
//! that shares a two-port Linux bridge with the domain's vif (`vnx<port>`, fixed by the
//! `vifname` of the xl config; the vif hotplug script adds it to the bridge), and copies
//! each frame between the tap and the UDP pair. Segments, tunnels and epoch colouring are
//! the switch's, unchanged.
//!
//! Why a tap and not an AF_PACKET socket on the vif: netfront hands netback TCP segments
//! of up to 64 KiB (GSO) with checksums left to the "hardware". A packet socket sees
//! those super-frames as they are, and they would reach a QEMU guest as oversized frames
//! with bad checksums. A tap opened without `IFF_VNET_HDR` offers no offloads, so the
//! kernel segments and checksums every frame on its way from the bridge into the tap.
//!
//! The vif disappears when its domain is destroyed and comes back (same name) when it is
//! created or restored; the bridge and the tap stay, so the relay never needs to notice.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Names of the dom0 devices of one port.
#[derive(Clone, Debug, PartialEq)]
pub struct VifNames {
    /// The vif (`vnx<port>`).
    pub vif: String,
    /// The bridge joining vif and tap (`vnb<port>`).
    pub bridge: String,
    /// The relay's tap (`vnt<port>`).
    pub tap: String,
}

impl VifNames {
    /// The names for switch port `port` (each at most 15 bytes for port < 10^12).
    pub fn for_port(port: u32) -> VifNames {
        VifNames { vif: format!("vnx{port}"), bridge: format!("vnb{port}"), tap: format!("vnt{port}") }
    }
}

/// Frames copied by a relay, each way.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// From the domU (tap) to the switch.
    pub to_switch: AtomicU64,
    /// From the switch to the domU.
    pub to_guest: AtomicU64,
}

/// A running vif relay; stopped, and its bridge removed, on drop.
pub struct VifRelay {
    names: VifNames,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Frame counters.
    pub counters: Arc<RelayCounters>,
}

impl std::fmt::Debug for VifRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VifRelay").field("names", &self.names).finish()
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Opens a tap device named `name` (no packet-info header, no vnet header).
fn open_tap(name: &str) -> io::Result<OwnedFd> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    if name.len() > 15 {
        return Err(io::Error::other(format!("interface name {name:?} is too long")));
    }
    let path = c"/dev/net/tun";
    // SAFETY: open(2) with a NUL-terminated path; the fd is owned right after.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq { name: [0; 16], flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` lays out (40 bytes).
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl VifRelay {
    /// Creates the bridge and tap of `port` and relays frames between the tap and the
    /// switch port's UDP pair (`qemu_udp` is bound here, `switch_udp` is the switch's).
    pub fn spawn(port: u32, qemu_udp: u16, switch_udp: u16) -> io::Result<VifRelay> {
        let names = VifNames::for_port(port);
        let tap = open_tap(&names.tap)?;
        // The hotplug script may have made the bridge already (the vif came up first).
        let _ = ip(&["link", "add", &names.bridge, "type", "bridge"]);
        ip(&["link", "set", &names.tap, "master", &names.bridge])?;
        ip(&["link", "set", &names.tap, "up"])?;
        ip(&["link", "set", &names.bridge, "up"])?;
        // Frames are forwarded as soon as a port joins (no STP listening delay).
        let _ = std::fs::write(format!("/sys/class/net/{}/bridge/forward_delay", names.bridge), "0");
        let udp = UdpSocket::bind(("127.0.0.1", qemu_udp))?;
        udp.connect(("127.0.0.1", switch_udp))?;
        udp.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new().name(format!("vif{port}")).spawn(move || relay(tap, udp, &s, &c))?;
        Ok(VifRelay { names, stop, thread: Some(thread), counters })
    }
}

impl Drop for VifRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = ip(&["link", "del", &self.names.bridge]);
    }
}

fn relay(tap: OwnedFd, udp: UdpSocket, stop: &AtomicBool, counters: &RelayCounters) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [
            libc::pollfd { fd: tap.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: udp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 200) };
        if r <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            loop {
                // SAFETY: reading into a buffer we own, at most its length.
                let n = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                if udp.send(&buf[..n as usize]).is_ok() {
                    counters.to_switch.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            while let Ok(n) = udp.recv(&mut buf) {
                // SAFETY: writing `n` initialised bytes of our buffer.
                let w = unsafe { libc::write(tap.as_raw_fd(), buf.as_ptr().cast(), n) };
                if w > 0 {
                    counters.to_guest.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Text of the vif hotplug script libxl runs (`script=` in the vif spec) when a vif
/// comes and goes. libxl passes the action as `$1` and netback's own name for the device
/// (`vif<domid>.<n>`) as `$vif`; as Xen's `vif-common.sh` does, the script renames it to
/// the `vifname` in xenstore (`vnx<port>`), then joins it to its port's bridge.
pub const HOTPLUG_SCRIPT: &str = r#"#!/bin/sh
# vnsnap-agent vif hotplug script (generated): vif<d>.<n> -> vnx<port>, joined to vnb<port>.
dev="$vif"
name=$(xenstore-read "$XENBUS_PATH/vifname" 2>/dev/null)
[ -n "$name" ] || name="$dev"
case "$1" in
  online|add)
    if [ "$dev" != "$name" ]; then
      ip link set "$dev" name "$name" || exit 1
    fi
    br="vnb${name#vnx}"
    ip link add "$br" type bridge 2>/dev/null
    echo 0 > "/sys/class/net/$br/bridge/forward_delay" 2>/dev/null
    ip link set "$br" up
    ip link set "$name" master "$br" && ip link set "$name" up || exit 1
    ;;
esac
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_interface_names() {
        let n = VifNames::for_port(u32::MAX);
        for s in [&n.vif, &n.bridge, &n.tap] {
            assert!(s.len() <= 15, "{s}");
        }
        assert_eq!(VifNames::for_port(7), VifNames { vif: "vnx7".into(), bridge: "vnb7".into(), tap: "vnt7".into() });
    }

    #[test]
    fn hotplug_script_bridges_the_vif_of_its_port() {
        assert!(HOTPLUG_SCRIPT.contains("br=\"vnb${name#vnx}\""));
        assert!(HOTPLUG_SCRIPT.contains("ip link set \"$dev\" name \"$name\""));
        assert!(HOTPLUG_SCRIPT.starts_with("#!/bin/sh\n"));
    }
}
