//! The inter-host tunnel header.
//!
//! Every frame crossing between the switches of two hosts travels in one UDP datagram:
//!
//! ```text
//!  0      2      3      4              8                      16
//!  +------+------+------+--------------+----------------------+-----------------
//!  | "VN" | ver  | flags| segment (BE) |     epoch (BE)       | Ethernet frame
//!  +------+------+------+--------------+----------------------+-----------------
//! ```
//! `ver` is 1; `flags` is 0 (reserved, must be zero). The epoch is the sender port's
//! epoch when the frame left the VM (section 5.2 of the architecture).

/// Size of the header in bytes.
pub const HEADER_LEN: usize = 16;
const MAGIC: [u8; 2] = *b"VN";
const VERSION: u8 = 1;

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Segment of the frame.
    pub segment: u32,
    /// Sender port's epoch.
    pub epoch: u64,
}

/// Why a tunnel datagram was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// Shorter than a header plus a minimal Ethernet header.
    #[error("Datagram too short ({0} bytes)")]
    Short(usize),
    /// Not our magic.
    #[error("Bad magic")]
    Magic,
    /// Unknown version or flags.
    #[error("Unsupported version {0} / flags {1}")]
    Version(u8, u8),
}

/// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
pub fn encode(h: Header, buf: &mut [u8]) {
    buf[0..2].copy_from_slice(&MAGIC);
    buf[2] = VERSION;
    buf[3] = 0;
    buf[4..8].copy_from_slice(&h.segment.to_be_bytes());
    buf[8..16].copy_from_slice(&h.epoch.to_be_bytes());
}

/// Parses a datagram into its header and frame.
pub fn decode(dgram: &[u8]) -> Result<(Header, &[u8]), TunnelError> {
    if dgram.len() < HEADER_LEN + 14 {
        return Err(TunnelError::Short(dgram.len()));
    }
    if dgram[0..2] != MAGIC {
        return Err(TunnelError::Magic);
    }
    if dgram[2] != VERSION || dgram[3] != 0 {
        return Err(TunnelError::Version(dgram[2], dgram[3]));
    }
    let segment = u32::from_be_bytes(dgram[4..8].try_into().unwrap_or_default());
    let epoch = u64::from_be_bytes(dgram[8..16].try_into().unwrap_or_default());
    Ok((Header { segment, epoch }, &dgram[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut buf = vec![0u8; HEADER_LEN + 60];
        encode(Header { segment: 7, epoch: 1 << 40 }, &mut buf);
        let (h, f) = decode(&buf).unwrap();
        assert_eq!(h, Header { segment: 7, epoch: 1 << 40 });
        assert_eq!(f.len(), 60);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode(&[0u8; 10]), Err(TunnelError::Short(10)));
        let mut buf = vec![0u8; 64];
        assert_eq!(decode(&buf), Err(TunnelError::Magic));
        encode(Header { segment: 1, epoch: 0 }, &mut buf);
        buf[2] = 9;
        assert_eq!(decode(&buf), Err(TunnelError::Version(9, 0)));
    }
}
