//! A minimal writer for the `newc` cpio format used by Linux initramfs.
//!
//! Written by hand (rather than shelling out to `cpio`) so that device nodes
//! such as `/dev/console` can be included without root privileges and the
//! archive is byte-for-byte reproducible (fixed inode numbers, mtime 0,
//! owner root).

use std::collections::BTreeSet;
use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Streams entries into a newc archive.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
    dirs: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter { out, next_ino: 1, written: 0, dirs: BTreeSet::new() }
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            let z = [0u8; 4];
            self.out.write_all(&z[..4 - rem])?;
            self.written += (4 - rem) as u64;
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let ino = if name == "TRAILER!!!" { 0 } else { self.next_ino };
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(data.len()).map_err(|_| io::Error::other("cpio: file over 4 GiB"))?,
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).map_err(|_| io::Error::other("cpio: name too long"))?,
            0,
        ];
        let mut hdr = String::with_capacity(110);
        hdr.push_str("070701");
        for f in fields {
            hdr.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(hdr.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (hdr.len() + name.len() + 1) as u64;
        self.pad()?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    /// Adds a directory (and any missing parents), mode 0755.
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_string());
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[])
    }

    fn parent_of(&mut self, path: &str) -> io::Result<()> {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent)?;
        }
        Ok(())
    }

    /// Adds a regular file with permission bits `perm` (creating parents).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.parent_of(path)?;
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symlink `path -> target` (creating parents).
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parent_of(path)?;
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node (creating parents).
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.parent_of(path)?;
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        // Pad the archive to a 512-byte boundary like cpio(1) does.
        let rem = (self.written % 512) as usize;
        if rem != 0 {
            self.out.write_all(&vec![0u8; 512 - rem])?;
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/bin/hello", 0o755, b"hi!").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 512, 0);
        let s = String::from_utf8_lossy(&out);
        // First entry: the implicit parent directory "bin".
        assert!(s.starts_with("070701"));
        assert_eq!(&out[110..114], b"bin\0");
        // Every header starts on a 4-byte boundary.
        for (i, _) in s.match_indices("070701") {
            assert_eq!(i % 4, 0);
        }
        assert!(s.contains("bin/hello\0"));
        assert!(s.contains("TRAILER!!!"));
        // Directory created once.
        assert_eq!(s.matches("bin\0").count(), 1);
    }
}
