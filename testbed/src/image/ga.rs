//! The QEMU guest agent (`qemu-ga`) for the test image, with the shared libraries it needs.
//!
//! Everything comes from Debian's package archive (`apt-get download`, as the kernel does),
//! never from elsewhere: [`PACKAGES`] are downloaded and unpacked once into
//! `<cache>/qemu-ga/`, then `usr/sbin/qemu-ga`, its ELF interpreter and the closure of its
//! `NEEDED` libraries (read with `readelf -d`) are taken out of the unpacked tree. The agent
//! restores use it to step the guest's clock (`guest-set-time`, see `docs/snapshot.md`).

use super::{run_tool, ImageError};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian 12's guest agent and the packages holding its libraries (libc6 for libc, libm
/// and the loader; libglib2.0-0 for glib and gmodule; the rest as `qemu-ga` links them).
pub const PACKAGES: &[&str] =
    &["qemu-guest-agent", "libc6", "libglib2.0-0", "libpcre2-8-0", "libnuma1", "libudev1", "liburing2"];

/// Where the agent is installed in the initramfs.
pub const GA_PATH: &str = "usr/sbin/qemu-ga";
/// Where its libraries go (the init starts it with this as `LD_LIBRARY_PATH`).
pub const LIB_DIR: &str = "lib/x86_64-linux-gnu";
/// The ELF interpreter named by Debian's amd64 binaries.
pub const INTERP: &str = "lib64/ld-linux-x86-64.so.2";

/// Files to put into the initramfs: (path inside it, bytes), mode 0755.
pub type Files = Vec<(String, Vec<u8>)>;

/// Search directories of the unpacked tree, in the order the loader would use them.
const SEARCH: &[&str] = &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"];

/// Fetches (once) and returns the guest agent's files.
pub fn files(cache_dir: &Path) -> Result<Files, ImageError> {
    let root = unpacked(cache_dir)?;
    let ga = root.join(GA_PATH);
    let mut out: Files = vec![(GA_PATH.to_string(), read_resolved(&root, &ga)?)];
    out.push((INTERP.to_string(), read_resolved(&root, &root.join(INTERP))?));
    let mut seen = BTreeSet::new();
    let mut todo = needed(&ga)?;
    while let Some(lib) = todo.pop() {
        if !seen.insert(lib.clone()) || lib.starts_with("ld-linux") {
            continue;
        }
        let path = SEARCH
            .iter()
            .map(|d| root.join(d).join(&lib))
            .find(|p| p.exists())
            .ok_or_else(|| ImageError::Missing(format!("{lib} (needed by qemu-ga) in packages {PACKAGES:?}")))?;
        let real = resolve(&root, &path)?;
        todo.extend(needed(&real)?);
        out.push((format!("{LIB_DIR}/{lib}"), read_resolved(&root, &path)?));
    }
    Ok(out)
}

/// The unpacked packages, downloaded on first use. Built in a temporary directory renamed
/// into place, so concurrent builders never see a partial tree.
fn unpacked(cache_dir: &Path) -> Result<PathBuf, ImageError> {
    let dir = cache_dir.join("qemu-ga");
    let root = dir.join("root");
    if dir.join(".complete").exists() {
        return Ok(root);
    }
    let parent = cache_dir.to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| ImageError::io(&parent, e))?;
    let tmp = cache_dir.join(format!(".tmp-qemu-ga-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let debs = tmp.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| ImageError::io(&debs, e))?;
    let result = (|| {
        run_tool(Command::new("apt-get").current_dir(&debs).arg("download").args(PACKAGES))?;
        for deb in std::fs::read_dir(&debs).map_err(|e| ImageError::io(&debs, e))?.flatten() {
            run_tool(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(tmp.join("root")))?;
        }
        std::fs::remove_dir_all(&debs).map_err(|e| ImageError::io(&debs, e))?;
        std::fs::write(tmp.join(".complete"), PACKAGES.join("\n")).map_err(|e| ImageError::io(&tmp, e))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another builder won the race with the same packages.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if !dir.join(".complete").exists() {
        return Err(ImageError::Missing(format!("{} after unpacking", dir.display())));
    }
    Ok(root)
}

/// Follows symbolic links inside the unpacked tree (absolute targets are taken relative to
/// its root, as they would be in the guest).
fn resolve(root: &Path, path: &Path) -> Result<PathBuf, ImageError> {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        match std::fs::read_link(&p) {
            Ok(t) if t.is_absolute() => p = root.join(t.strip_prefix("/").unwrap_or(&t)),
            Ok(t) => p = p.parent().unwrap_or(root).join(t),
            Err(_) => return Ok(p),
        }
    }
    Err(ImageError::Missing(format!("{}: too many symbolic links", path.display())))
}

fn read_resolved(root: &Path, path: &Path) -> Result<Vec<u8>, ImageError> {
    let real = resolve(root, path)?;
    std::fs::read(&real).map_err(|e| ImageError::io(&real, e))
}

/// The `NEEDED` entries of an ELF file's dynamic section.
fn needed(elf: &Path) -> Result<Vec<String>, ImageError> {
    let out = run_tool(Command::new("readelf").args(["-d", "--wide"]).arg(elf))?;
    Ok(parse_needed(&String::from_utf8_lossy(&out)))
}

fn parse_needed(readelf: &str) -> Vec<String> {
    readelf
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_needed;

    #[test]
    fn needed_entries() {
        let text = " 0x0000000000000001 (NEEDED)             Shared library: [libglib-2.0.so.0]\n \
                    0x000000000000000e (SONAME)             Library soname: [libx.so.1]\n \
                    0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n";
        assert_eq!(parse_needed(text), vec!["libglib-2.0.so.0", "libc.so.6"]);
    }
}
