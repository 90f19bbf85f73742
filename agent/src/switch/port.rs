//! One switch port: the socket towards a VM NIC, its epoch, hold buffer and channel log.

use super::forward::{self, AheadPolicy, Colour};
use super::{PortSpec, SwitchConfig};
use mio::net::UdpSocket;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vnsnap_proto::PortStats;

struct Held {
    frame: Vec<u8>,
    epoch: u64,
    deadline: Instant,
}

/// A port of the switch.
pub(super) struct Port {
    pub sock: UdpSocket,
    pub qemu: SocketAddr,
    pub segment: u32,
    pub epoch: u64,
    pub policy: AheadPolicy,
    /// Frames of older epochs delivered since the port's cut (the channel state).
    pub log: Option<Vec<Vec<u8>>>,
    pub stats: PortStats,
    stale_below: u64,
    hold: VecDeque<Held>,
    hold_bytes: usize,
    hold_bound: usize,
    hold_deadline: Duration,
}

impl Port {
    pub fn new(spec: PortSpec, sock: UdpSocket, cfg: &SwitchConfig) -> Port {
        Port {
            sock,
            qemu: spec.qemu,
            segment: spec.segment,
            epoch: spec.epoch,
            policy: AheadPolicy::Hold,
            log: None,
            stats: PortStats {
                port: spec.port,
                domain: spec.domain,
                segment: spec.segment,
                epoch: spec.epoch,
                ..Default::default()
            },
            stale_below: spec.stale_below,
            hold: VecDeque::new(),
            hold_bytes: 0,
            hold_bound: cfg.hold_bound,
            hold_deadline: cfg.hold_deadline,
        }
    }

    /// Delivers a frame of `epoch` to the VM, or holds, records or drops it (section 5.2).
    pub fn deliver(&mut self, frame: &[u8], epoch: u64, now: Instant) {
        if epoch < self.stale_below {
            self.stats.stale_frames += 1;
            return;
        }
        match forward::colour(epoch, self.epoch) {
            Colour::Current => self.send_to_vm(frame),
            Colour::Behind => {
                if let Some(log) = self.log.as_mut() {
                    log.push(frame.to_vec());
                    self.stats.recorded_frames += 1;
                }
                self.send_to_vm(frame);
            }
            Colour::Ahead => {
                if forward::admit_hold(self.policy, self.hold_bytes, frame.len(), self.hold_bound) {
                    self.hold_bytes += frame.len();
                    self.hold.push_back(Held { frame: frame.to_vec(), epoch, deadline: now + self.hold_deadline });
                    self.stats.held_frames += 1;
                } else {
                    self.stats.dropped_frames += 1;
                }
            }
        }
    }

    /// Sends a frame to QEMU's side of the pair.
    pub fn send_to_vm(&mut self, frame: &[u8]) {
        match self.sock.send_to(frame, self.qemu) {
            Ok(_) => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += frame.len() as u64;
            }
            Err(_) => self.stats.dropped_frames += 1,
        }
    }

    /// Delivers held frames whose epoch is no longer ahead of the port's, in arrival order.
    pub fn release_holds(&mut self) -> u64 {
        self.stats.epoch = self.epoch;
        let mut released = 0;
        let mut keep = VecDeque::new();
        while let Some(h) = self.hold.pop_front() {
            if h.epoch <= self.epoch {
                self.hold_bytes -= h.frame.len();
                self.send_to_vm(&h.frame);
                released += 1;
            } else {
                keep.push_back(h);
            }
        }
        self.hold = keep;
        released
    }

    /// Drops held frames whose deadline passed.
    pub fn expire_holds(&mut self, now: Instant) {
        while self.hold.front().is_some_and(|h| h.deadline <= now) {
            if let Some(h) = self.hold.pop_front() {
                self.hold_bytes -= h.frame.len();
                self.stats.dropped_frames += 1;
            }
        }
    }

    /// Earliest hold deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.hold.front().map(|h| h.deadline)
    }
}
