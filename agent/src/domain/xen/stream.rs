//! Just enough of the Xen save stream format to know where a stream ends.
//!
//! A checkpoint taken through `xl migrate` arrives on a pipe that stays open after the
//! last byte (xl then waits for the receiver's answer), so the receiver must recognise
//! the end itself. The layers, outermost first (Xen 4.17):
//!
//! 1. xl's save file header: 32-byte magic `"Xen saved domain, xl format\n \0 \r"`, then
//!    four native-endian u32 (byte order marker, mandatory flags, optional flags,
//!    optional data length), then the optional data (the domain config).
//! 2. libxl's stream (`docs/specs/libxl-migration-stream.pandoc`): a 16-byte big-endian
//!    header (ident `"LibxlFmt"`, version, options), then records of `type: u32,
//!    length: u32` (native endian) and a body padded to 8 bytes, up to an END record
//!    (type 0).
//! 3. The LIBXC_CONTEXT record (type 1, empty) is followed by libxc's own stream
//!    (`libxc-migration-stream.pandoc`): a 24-byte big-endian image header (marker
//!    `0xffff_ffff_ffff_ffff`, id `"XENF"`, version, options), a 16-byte domain header,
//!    then records framed as above up to its own END record.
//!
//! The same bytes are a valid `xl restore` file, which is what the agent stores.

use std::io::{self, Read, Write};

/// The magic at the start of every xl save file.
pub const XL_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
const LIBXL_IDENT: u64 = 0x4c69_6278_6c46_6d74;
const LIBXC_MARKER: u64 = u64::MAX;
const LIBXC_ID: u32 = 0x5845_4e46;
const REC_END: u32 = 0;
const REC_LIBXC_CONTEXT: u32 = 1;
/// Largest record body accepted (a batch of 1024 pages plus its pfn list is ~4 MiB).
const MAX_RECORD: u32 = 64 << 20;

/// Copies one complete save stream from `r` to `w` and returns its length; reads nothing
/// past the stream's final END record.
pub fn copy_stream(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut c = Copier { r, w, n: 0, buf: vec![0u8; 1 << 20] };
    let hdr = c.take(48)?;
    if hdr[..32] != XL_MAGIC[..] {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an xl save stream (bad magic)"));
    }
    let optional = u32::from_ne_bytes([hdr[44], hdr[45], hdr[46], hdr[47]]);
    c.skip(u64::from(optional))?;
    let lh = c.take(16)?;
    if u64::from_be_bytes(lh[..8].try_into().unwrap_or_default()) != LIBXL_IDENT {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no libxl stream header"));
    }
    let mut seen = Vec::new();
    loop {
        let ty = c.record().map_err(|e| io::Error::new(e.kind(), format!("{e} (libxl records so far: {seen:?})")))?;
        seen.push(ty);
        match ty {
            REC_END => return Ok(c.n),
            REC_LIBXC_CONTEXT => {
                c.libxc().map_err(|e| io::Error::new(e.kind(), format!("{e} (libxl records so far: {seen:?})")))?
            }
            _ => {}
        }
    }
}

struct Copier<'a, R, W> {
    r: &'a mut R,
    w: &'a mut W,
    n: u64,
    buf: Vec<u8>,
}

impl<R: Read, W: Write> Copier<'_, R, W> {
    /// Copies exactly `len` bytes (at most 1 MiB) and returns them.
    fn take(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.r.read_exact(&mut b)?;
        self.w.write_all(&b)?;
        self.n += len as u64;
        Ok(b)
    }

    /// Copies `len` bytes without keeping them.
    fn skip(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 {
            let k = len.min(self.buf.len() as u64) as usize;
            self.r.read_exact(&mut self.buf[..k])?;
            self.w.write_all(&self.buf[..k])?;
            self.n += k as u64;
            len -= k as u64;
        }
        Ok(())
    }

    /// Copies one record (header, body, padding); returns its type.
    fn record(&mut self) -> io::Result<u32> {
        let h = self.take(8)?;
        let ty = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
        let len = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
        if len > MAX_RECORD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record of {len} bytes")));
        }
        self.skip(u64::from(len).div_ceil(8) * 8)?;
        Ok(ty)
    }

    /// Copies a libxc stream up to and including its END record.
    fn libxc(&mut self) -> io::Result<()> {
        let ih = self.take(24)?;
        let marker = u64::from_be_bytes(ih[..8].try_into().unwrap_or_default());
        let id = u32::from_be_bytes(ih[8..12].try_into().unwrap_or_default());
        if marker != LIBXC_MARKER || id != LIBXC_ID {
            let hex: String = ih.iter().map(|b| format!("{b:02x}")).collect();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no libxc image header at offset {}: {hex}", self.n - 24),
            ));
        }
        self.take(16)?; // domain header
        while self.record()? != REC_END {}
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rec(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
        out.extend(ty.to_ne_bytes());
        out.extend((body.len() as u32).to_ne_bytes());
        out.extend(body);
        out.extend(std::iter::repeat_n(0u8, body.len().next_multiple_of(8) - body.len()));
    }

    /// A syntactically complete stream with a config, two libxc records and a libxl one.
    pub(crate) fn sample() -> Vec<u8> {
        let mut s = XL_MAGIC.to_vec();
        let config = b"{\"c_info\":{}}";
        for v in [0x0102_0304u32, 1, 0, config.len() as u32] {
            s.extend(v.to_ne_bytes());
        }
        s.extend(config);
        s.extend(LIBXL_IDENT.to_be_bytes());
        s.extend(2u32.to_be_bytes());
        s.extend(0u32.to_be_bytes());
        rec(&mut s, REC_LIBXC_CONTEXT, &[]);
        s.extend(LIBXC_MARKER.to_be_bytes());
        s.extend(LIBXC_ID.to_be_bytes());
        s.extend(3u32.to_be_bytes());
        s.extend([0u8; 8]);
        s.extend([1u8; 16]);
        rec(&mut s, 1, &[7u8; 4096 + 12]);
        rec(&mut s, 5, &[3u8; 5]);
        rec(&mut s, REC_END, &[]);
        rec(&mut s, 2, b"xenstore");
        rec(&mut s, REC_END, &[]);
        s
    }

    #[test]
    fn copies_exactly_one_stream_and_stops_at_its_end() {
        let s = sample();
        let mut input = s.clone();
        input.extend(b"not part of the stream");
        let mut out = Vec::new();
        let n = copy_stream(&mut input.as_slice(), &mut out).unwrap();
        assert_eq!(n as usize, s.len());
        assert_eq!(out, s);
    }

    #[test]
    fn rejects_a_stream_without_the_xl_magic() {
        let mut s = sample();
        s[0] = b'Y';
        assert_eq!(copy_stream(&mut s.as_slice(), &mut Vec::new()).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let s = sample();
        let cut = &s[..s.len() - 9];
        assert_eq!(copy_stream(&mut &cut[..], &mut Vec::new()).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
