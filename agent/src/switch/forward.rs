//! The switch's forwarding decisions: pure functions, no sockets, no clocks.
//!
//! Two decisions are made for every frame:
//! 1. *where* it goes ([`route`]): MAC learning table lookup within the frame's segment,
//!    flooding broadcast, multicast and unknown unicast to the segment only;
//! 2. *when* it is delivered to a local port ([`colour`]): the epoch colouring of a
//!    consistent cut (ARCHITECTURE.md section 5.2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// Where a MAC address was last seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Behind a local port.
    Port(u32),
    /// Behind the switch of another host.
    Remote(SocketAddr),
}

/// Where a frame arrived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// From a VM on a local port.
    Port(u32),
    /// From another host's switch through the tunnel.
    Tunnel(SocketAddr),
}

/// The routing outcome of one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// One known destination.
    Unicast(Location),
    /// Every local port of the segment except the ingress, plus (for frames from a local
    /// port only) every remote peer of the segment. Split horizon: frames from the tunnel
    /// are never sent back into it, as the hosts form a full mesh.
    Flood,
    /// Nowhere (destination is where it came from, or a tunnel-to-tunnel hop).
    Drop,
}

/// A MAC learning table of one segment, with ageing.
#[derive(Debug, Default)]
pub struct MacTable {
    entries: HashMap<Mac, (Location, Instant)>,
}

/// Entries not refreshed for this long are forgotten.
pub const MAC_AGEING: Duration = Duration::from_secs(300);

impl MacTable {
    /// Records that `mac` was seen at `loc` at `now`. Multicast sources are ignored.
    pub fn learn(&mut self, mac: Mac, loc: Location, now: Instant) {
        if is_multicast(&mac) {
            return;
        }
        self.entries.insert(mac, (loc, now));
    }

    /// Where `mac` is, if known and not aged out at `now`.
    pub fn lookup(&self, mac: &Mac, now: Instant) -> Option<Location> {
        self.entries.get(mac).filter(|(_, seen)| now.saturating_duration_since(*seen) < MAC_AGEING).map(|(loc, _)| *loc)
    }

    /// Removes aged entries and entries pointing at `port` if given.
    pub fn expire(&mut self, now: Instant, removed_port: Option<u32>) {
        self.entries.retain(|_, (loc, seen)| {
            now.saturating_duration_since(*seen) < MAC_AGEING && Some(*loc) != removed_port.map(Location::Port)
        });
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, for snapshot manifests.
    pub fn entries(&self) -> impl Iterator<Item = (&Mac, &Location)> {
        self.entries.iter().map(|(m, (l, _))| (m, l))
    }
}

/// True for broadcast and multicast MACs (group bit set).
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

/// Destination and source MACs of an Ethernet frame, or `None` if it is too short.
pub fn macs(frame: &[u8]) -> Option<(Mac, Mac)> {
    if frame.len() < 14 {
        return None;
    }
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    Some((dst, src))
}

/// Decides where a frame with destination `dst` that came in at `ingress` goes.
pub fn route(table: &MacTable, dst: &Mac, ingress: Ingress, now: Instant) -> Route {
    if is_multicast(dst) {
        return Route::Flood;
    }
    match (table.lookup(dst, now), ingress) {
        (None, _) => Route::Flood,
        (Some(Location::Port(p)), Ingress::Port(i)) if p == i => Route::Drop,
        (Some(Location::Remote(_)), Ingress::Tunnel(_)) => Route::Drop,
        (Some(loc), _) => Route::Unicast(loc),
    }
}

/// How a frame relates to the cut of the port it is delivered to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// Same epoch: deliver.
    Current,
    /// Sent after its sender's cut, to a port not yet cut: delivering it now would make it
    /// an orphan (received in the snapshot, never sent in it). Hold until the port's cut.
    Ahead,
    /// Sent before its sender's cut, to a port already cut: an in-flight message of the
    /// cut. Deliver it and record it in the port's channel log.
    Behind,
}

/// Colours a frame of epoch `frame` arriving at a port of epoch `port`.
pub fn colour(frame: u64, port: u64) -> Colour {
    match frame.cmp(&port) {
        std::cmp::Ordering::Equal => Colour::Current,
        std::cmp::Ordering::Greater => Colour::Ahead,
        std::cmp::Ordering::Less => Colour::Behind,
    }
}

/// What to do with a frame coloured [`Colour::Ahead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AheadPolicy {
    /// Hold it in the port's bounded buffer (ours).
    #[default]
    Hold,
    /// Drop it (what VNsnap did; used by the `precopy-drop` baseline).
    Drop,
}

/// Whether a frame of `len` bytes may join a hold buffer that has `held` bytes, under `bound`.
pub fn admit_hold(policy: AheadPolicy, held: usize, len: usize, bound: usize) -> bool {
    policy == AheadPolicy::Hold && held.saturating_add(len) <= bound
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];
    const BCAST: Mac = [0xff; 6];

    fn peer() -> SocketAddr {
        "10.0.0.9:4790".parse().unwrap()
    }

    #[test]
    fn floods_broadcast_and_unknown_unicast() {
        let t = MacTable::default();
        let now = Instant::now();
        assert_eq!(route(&t, &BCAST, Ingress::Port(1), now), Route::Flood);
        assert_eq!(route(&t, &B, Ingress::Port(1), now), Route::Flood);
        assert_eq!(route(&t, &[0x33, 0x33, 0, 0, 0, 1], Ingress::Port(1), now), Route::Flood);
    }

    #[test]
    fn unicasts_to_learned_port_and_remote() {
        let mut t = MacTable::default();
        let now = Instant::now();
        t.learn(A, Location::Port(1), now);
        t.learn(B, Location::Remote(peer()), now);
        assert_eq!(route(&t, &A, Ingress::Port(2), now), Route::Unicast(Location::Port(1)));
        assert_eq!(route(&t, &B, Ingress::Port(1), now), Route::Unicast(Location::Remote(peer())));
        assert_eq!(route(&t, &A, Ingress::Tunnel(peer()), now), Route::Unicast(Location::Port(1)));
    }

    #[test]
    fn never_hairpins_or_relays_between_tunnels() {
        let mut t = MacTable::default();
        let now = Instant::now();
        t.learn(A, Location::Port(1), now);
        t.learn(B, Location::Remote(peer()), now);
        assert_eq!(route(&t, &A, Ingress::Port(1), now), Route::Drop);
        assert_eq!(route(&t, &B, Ingress::Tunnel("10.0.0.8:4790".parse().unwrap()), now), Route::Drop);
    }

    #[test]
    fn forgets_aged_entries() {
        let mut t = MacTable::default();
        let then = Instant::now();
        t.learn(A, Location::Port(1), then);
        let later = then + MAC_AGEING + Duration::from_secs(1);
        assert_eq!(t.lookup(&A, later), None);
        t.expire(later, None);
        assert!(t.is_empty());
    }

    #[test]
    fn forgets_entries_of_removed_port() {
        let mut t = MacTable::default();
        let now = Instant::now();
        t.learn(A, Location::Port(1), now);
        t.learn(B, Location::Port(2), now);
        t.expire(now, Some(1));
        assert_eq!(t.lookup(&A, now), None);
        assert_eq!(t.lookup(&B, now), Some(Location::Port(2)));
    }

    #[test]
    fn does_not_learn_multicast_sources() {
        let mut t = MacTable::default();
        t.learn(BCAST, Location::Port(1), Instant::now());
        assert!(t.is_empty());
    }

    #[test]
    fn colours_by_epoch() {
        assert_eq!(colour(3, 3), Colour::Current);
        assert_eq!(colour(4, 3), Colour::Ahead);
        assert_eq!(colour(2, 3), Colour::Behind);
    }

    #[test]
    fn holds_within_bound_only() {
        assert!(admit_hold(AheadPolicy::Hold, 0, 1500, 4096));
        assert!(!admit_hold(AheadPolicy::Hold, 3000, 1500, 4096));
        assert!(!admit_hold(AheadPolicy::Drop, 0, 10, 4096));
    }

    #[test]
    fn short_frames_have_no_macs() {
        assert_eq!(macs(&[0; 13]), None);
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&B);
        f[6..12].copy_from_slice(&A);
        assert_eq!(macs(&f), Some((B, A)));
    }
}
