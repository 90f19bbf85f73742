//! Kernel module selection and load ordering, without `depmod`/`modinfo`:
//! the `depends=` entry is read straight from each `.ko`'s `.modinfo` strings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::ImageError;

/// A module to put into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (underscores).
    pub name: String,
    /// Path relative to the module tree root (e.g. `kernel/drivers/virtio/virtio.ko`).
    pub rel_path: String,
}

/// Canonical module name: file stem with `-` replaced by `_`.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Extracts the `depends=` list from the bytes of a `.ko` file.
pub fn depends_of(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let mut i = 0;
    while let Some(pos) = find(&ko[i..], key) {
        let start = i + pos;
        // Must start a NUL-separated modinfo string.
        if start == 0 || ko[start - 1] == 0 {
            let vstart = start + key.len();
            let vend = ko[vstart..].iter().position(|&b| b == 0).map_or(ko.len(), |e| vstart + e);
            let val = String::from_utf8_lossy(&ko[vstart..vend]);
            return val.split(',').map(str::trim).filter(|s| !s.is_empty()).map(canonical).collect();
        }
        i = start + 1;
    }
    Vec::new()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn index_list(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file = line.rsplit('/').next().unwrap_or(line);
        let stem = file.split(".ko").next().unwrap_or(file);
        m.insert(canonical(stem), line.to_string());
    }
    m
}

/// Resolves `roots` and their dependencies in `moddir` (a module tree with
/// `modules.order` and optionally `modules.builtin`) into load order
/// (dependencies first). Built-in modules are skipped; a module that is
/// neither built in nor present is an error.
pub fn resolve(moddir: &Path, roots: &[&str]) -> Result<Vec<Module>, ImageError> {
    let read = |name: &str| -> Result<String, ImageError> {
        let p = moddir.join(name);
        std::fs::read_to_string(&p).map_err(|e| ImageError::io(&p, e))
    };
    let order = index_list(&read("modules.order")?);
    let builtin = match read("modules.builtin") {
        Ok(t) => index_list(&t),
        Err(_) => BTreeMap::new(),
    };
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    let mut visiting = BTreeSet::new();
    for r in roots {
        visit(moddir, &canonical(r), &order, &builtin, &mut done, &mut visiting, &mut out)?;
    }
    Ok(out)
}

fn visit(
    moddir: &Path,
    name: &str,
    order: &BTreeMap<String, String>,
    builtin: &BTreeMap<String, String>,
    done: &mut BTreeSet<String>,
    visiting: &mut BTreeSet<String>,
    out: &mut Vec<Module>,
) -> Result<(), ImageError> {
    if done.contains(name) || builtin.contains_key(name) && !order.contains_key(name) {
        return Ok(());
    }
    if !visiting.insert(name.to_string()) {
        return Err(ImageError::Modules(format!("dependency cycle at {name}")));
    }
    let rel = order
        .get(name)
        .ok_or_else(|| ImageError::Modules(format!("module {name} is neither built in nor in modules.order")))?;
    if !rel.ends_with(".ko") {
        return Err(ImageError::Modules(format!("module {rel} is compressed; only plain .ko files are supported")));
    }
    let path: PathBuf = moddir.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| ImageError::io(&path, e))?;
    for dep in depends_of(&bytes) {
        visit(moddir, &dep, order, builtin, done, visiting, out)?;
    }
    visiting.remove(name);
    done.insert(name.to_string());
    out.push(Module { name: name.to_string(), rel_path: rel.clone() });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_depends() {
        let ko = b"\x7fELF....\0license=GPL\0depends=virtio_ring,virtio-pci-modern-dev,virtio\0retpoline=Y\0";
        assert_eq!(depends_of(ko), vec!["virtio_ring", "virtio_pci_modern_dev", "virtio"]);
        assert!(depends_of(b"\0depends=\0name=x\0").is_empty());
        assert!(depends_of(b"xdepends=foo\0").is_empty());
    }

    #[test]
    fn orders_dependencies_first() {
        let dir = std::env::temp_dir().join(format!("vnsnap-mods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::write(dir.join("modules.order"), "kernel/a.ko\nkernel/b.ko\nkernel/c-x.ko\n").unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/crc16.ko\n").unwrap();
        std::fs::write(dir.join("kernel/a.ko"), b"\0depends=b,c_x,crc16\0").unwrap();
        std::fs::write(dir.join("kernel/b.ko"), b"\0depends=c-x\0").unwrap();
        std::fs::write(dir.join("kernel/c-x.ko"), b"\0depends=\0").unwrap();
        let m = resolve(&dir, &["a", "b"]).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["c_x", "b", "a"]);
        assert!(resolve(&dir, &["nope"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn real_kernel_tree_if_present() {
        let moddir = super::super::repo_root().join(".cache/kernel/modules");
        if !moddir.join("modules.order").exists() {
            return;
        }
        let m = resolve(&moddir, super::super::DEFAULT_MODULES).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("virtio") < pos("virtio_pci"));
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
    }
}
