//! Guest image builder.
//!
//! [`build`] produces everything needed to boot a vnsnap VM:
//! - the kernel (`vmlinuz`, copied from the kernel dir),
//! - an initramfs (gzip'd newc cpio) with busybox-static and its applet
//!   symlinks, the virtio/ext4 modules in dependency order, the
//!   [`init::INIT_SCRIPT`], the static `vnsnap-guest` binary and the QEMU guest agent
//!   with its libraries (see [`ga`]),
//! - a qcow2 base image of a small ext4 data disk (see [`disk`]).
//!
//! Results are cached in `<cache>/images/<key>/`, where `key` is a blake3 hash
//! over every input (kernel, modules, busybox, guest binary, init script,
//! builder version). Builds go to a temporary directory that is renamed into
//! place, so concurrent builders never see or produce a partial image.

pub mod cpio;
pub mod disk;
pub mod ga;
pub mod init;
pub mod modules;

pub use init::{kernel_cmdline, NicConfig};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bumped whenever the builder's output changes for the same inputs.
pub const BUILDER_VERSION: &str = "vnsnap-image-3";

/// Modules loaded at boot (their dependencies are added automatically).
/// The Xen front ends fail to load (harmlessly) in a QEMU guest and the virtio modules
/// find no devices in a Xen guest, so one image serves both hypervisors.
pub const DEFAULT_MODULES: &[&str] =
    &["virtio_pci", "virtio_net", "virtio_blk", "virtio_console", "ext4", "xen_netfront", "xen_blkfront"];

/// The Rust target the guest binary is built for.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Errors from building an image or the guest binary.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An external tool (mke2fs, qemu-img, cargo, busybox) failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Tool {
        /// The command line.
        cmd: String,
        /// Its exit status (or spawn error).
        status: String,
        /// The tail of its stderr.
        stderr: String,
    },
    /// Kernel module resolution failed.
    #[error("kernel modules: {0}")]
    Modules(String),
    /// A required input is missing.
    #[error("missing input: {0}")]
    Missing(String),
}

impl ImageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ImageError::Io { path: path.to_path_buf(), source }
    }
}

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Cache root; images go to `<cache_dir>/images/<key>/`.
    pub cache_dir: PathBuf,
    /// Kernel dir with `vmlinuz`, `version` and `modules/` (from `scripts/setup.sh`).
    pub kernel_dir: PathBuf,
    /// The static `vnsnap-guest` binary (see [`build_guest_binary`]).
    pub guest_binary: PathBuf,
    /// The busybox-static binary.
    pub busybox: PathBuf,
    /// Root modules to load (dependencies are resolved automatically).
    pub modules: Vec<String>,
    /// Ship the QEMU guest agent (fetched once with `apt-get download`, see [`ga`]).
    pub guest_agent: bool,
}

impl BuildOptions {
    /// Defaults for a repository: cache from [`cache_dir`], kernel in
    /// `<cache>/kernel`, busybox from `/bin/busybox` (or `/usr/bin/busybox`).
    pub fn new(repo_root: &Path, guest_binary: PathBuf) -> Self {
        let cache_dir = cache_dir(repo_root);
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
        BuildOptions {
            kernel_dir: cache_dir.join("kernel"),
            cache_dir,
            guest_binary,
            busybox,
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            guest_agent: true,
        }
    }
}

/// A built (cached) guest image. All paths are inside the cache and must be
/// treated as read-only; boot VMs from a qcow2 overlay of `data_disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs (gzip'd newc cpio).
    pub initrd: PathBuf,
    /// qcow2 base image of the ext4 data disk.
    pub data_disk: PathBuf,
    /// Content hash identifying this image (hex blake3).
    pub key: String,
}

/// The repository root (parent of the `testbed` crate).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cache directory: `$VNSNAP_CACHE` (relative paths are taken relative to
/// `repo_root`) or `<repo_root>/.cache`.
pub fn cache_dir(repo_root: &Path) -> PathBuf {
    match std::env::var_os("VNSNAP_CACHE") {
        Some(v) if !v.is_empty() => repo_root.join(PathBuf::from(v)),
        _ => repo_root.join(".cache"),
    }
}

/// Runs a tool, mapping failure to [`ImageError::Tool`]; returns stdout.
pub(crate) fn run_tool(cmd: &mut Command) -> Result<Vec<u8>, ImageError> {
    let desc = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ImageError::Tool {
        cmd: desc.clone(),
        status: format!("spawn: {e}"),
        stderr: String::new(),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String =
            err.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(ImageError::Tool { cmd: desc, status: out.status.to_string(), stderr: tail });
    }
    Ok(out.stdout)
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::io(path, e))
}

/// Everything that goes into an image, loaded and hashed.
struct Inputs {
    kver: String,
    kernel: Vec<u8>,
    modules: Vec<(modules::Module, Vec<u8>)>,
    busybox: Vec<u8>,
    applets: Vec<String>,
    guest: Vec<u8>,
    guest_agent: ga::Files,
    key: String,
}

fn load_inputs(opts: &BuildOptions) -> Result<Inputs, ImageError> {
    let kver = String::from_utf8_lossy(&read(&opts.kernel_dir.join("version"))?).trim().to_string();
    if kver.is_empty() {
        return Err(ImageError::Missing("kernel version file is empty".into()));
    }
    let kernel = read(&opts.kernel_dir.join("vmlinuz"))?;
    let moddir = opts.kernel_dir.join("modules");
    let roots: Vec<&str> = opts.modules.iter().map(String::as_str).collect();
    let mut mods = Vec::new();
    for m in modules::resolve(&moddir, &roots)? {
        let bytes = read(&moddir.join(&m.rel_path))?;
        mods.push((m, bytes));
    }
    let busybox = read(&opts.busybox)?;
    let list = run_tool(Command::new(&opts.busybox).arg("--list"))?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&list)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    let guest = read(&opts.guest_binary)?;
    let guest_agent = if opts.guest_agent { ga::files(&opts.cache_dir)? } else { Vec::new() };

    let mut h = blake3::Hasher::new();
    let mut field = |name: &str, data: &[u8]| {
        h.update(name.as_bytes());
        h.update(&(data.len() as u64).to_le_bytes());
        h.update(data);
    };
    field("builder", BUILDER_VERSION.as_bytes());
    field("kver", kver.as_bytes());
    field("kernel", &kernel);
    for (m, b) in &mods {
        field("module", m.rel_path.as_bytes());
        field("module-bytes", b);
    }
    field("busybox", &busybox);
    field("applets", applets.join(",").as_bytes());
    field("guest", &guest);
    for (path, bytes) in &guest_agent {
        field("ga", path.as_bytes());
        field("ga-bytes", bytes);
    }
    field("init", init::INIT_SCRIPT.as_bytes());
    field("hwclock", HWCLOCK_SCRIPT.as_bytes());
    field("readme", disk::README.as_bytes());
    field("disk-mib", &disk::DATA_DISK_MIB.to_le_bytes());
    let key = h.finalize().to_hex()[..32].to_string();
    Ok(Inputs { kver, kernel, modules: mods, busybox, applets, guest, guest_agent, key })
}

fn image_at(dir: &Path, key: &str) -> GuestImage {
    GuestImage {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        data_disk: dir.join("data.qcow2"),
        key: key.to_string(),
    }
}

fn write_initrd(inp: &Inputs, out: &Path) -> Result<(), ImageError> {
    let f = std::fs::File::create(out).map_err(|e| ImageError::io(out, e))?;
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::new(6));
    let mut w = cpio::CpioWriter::new(gz);
    let io = |e| ImageError::io(out, e);
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "data",
        "root",
        "mnt",
        "var",
        "etc/vnsnap",
    ] {
        w.dir(d).map_err(io)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1).map_err(io)?;
    w.char_dev("dev/null", 0o666, 1, 3).map_err(io)?;
    w.char_dev("dev/ttyS0", 0o600, 4, 64).map_err(io)?;
    w.file("bin/busybox", 0o755, &inp.busybox).map_err(io)?;
    for a in &inp.applets {
        w.symlink(&format!("bin/{a}"), "busybox").map_err(io)?;
    }
    let guest = stripped(&inp.guest, out).unwrap_or_else(|| inp.guest.clone());
    w.file("bin/vnsnap-guest", 0o755, &guest).map_err(io)?;
    for (path, bytes) in &inp.guest_agent {
        w.file(path, 0o755, bytes).map_err(io)?;
    }
    // qemu-ga's guest-set-time runs `/sbin/hwclock -w` after setting the clock (and refuses
    // to set it when that path is not executable) and answers only once it is done.
    // busybox's hwclock waits for the next second boundary before it writes the RTC, which
    // would hold every restore's resume up to a second: it runs in the background instead.
    w.file("sbin/hwclock", 0o755, HWCLOCK_SCRIPT.as_bytes()).map_err(io)?;
    w.file("init", 0o755, init::INIT_SCRIPT.as_bytes()).map_err(io)?;
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n").map_err(io)?;
    w.file("etc/group", 0o644, b"root:x:0:\n").map_err(io)?;
    w.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n").map_err(io)?;
    let mut list = String::new();
    for (m, bytes) in &inp.modules {
        w.file(&format!("lib/modules/{}/{}", inp.kver, m.rel_path), 0o644, bytes).map_err(io)?;
        list.push_str(&m.rel_path);
        list.push('\n');
    }
    w.file("etc/vnsnap/modules", 0o644, list.as_bytes()).map_err(io)?;
    let gz = w.finish().map_err(io)?;
    let mut bw = gz.finish().map_err(io)?;
    bw.flush().map_err(io)?;
    let f = bw.into_inner().map_err(|e| ImageError::io(out, e.into_error()))?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// `/sbin/hwclock` of the image (see `write_initrd`).
pub const HWCLOCK_SCRIPT: &str = "#!/bin/sh\n/bin/hwclock \"$@\" </dev/null >/dev/null 2>&1 &\nexit 0\n";

/// Returns `bin` without debug info (via `strip --strip-debug`, if installed);
/// `None` if stripping is not possible. Keeps the initramfs small.
fn stripped(bin: &[u8], near: &Path) -> Option<Vec<u8>> {
    let dir = near.parent()?;
    let src = dir.join("guest.unstripped");
    let dst = dir.join("guest.stripped");
    std::fs::write(&src, bin).ok()?;
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(&src)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let out = if ok { std::fs::read(&dst).ok() } else { None };
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    out
}

/// Builds (or finds in the cache) the guest image for `opts`.
pub fn build(opts: &BuildOptions) -> Result<GuestImage, ImageError> {
    let inp = load_inputs(opts)?;
    let images = opts.cache_dir.join("images");
    let final_dir = images.join(&inp.key);
    if final_dir.join("manifest.json").exists() {
        return Ok(image_at(&final_dir, &inp.key));
    }
    std::fs::create_dir_all(&images).map_err(|e| ImageError::io(&images, e))?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tmp = images.join(format!(".tmp-{}-{}-{nanos}", inp.key, std::process::id()));
    let result = build_into(&inp, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &final_dir) {
        Ok(()) => {}
        Err(_) if final_dir.join("manifest.json").exists() => {
            // Another builder won the race with identical content.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(_) if final_dir.exists() => {
            // A damaged entry (no manifest): move it aside and retry once.
            let stale = images.join(format!(".stale-{}-{}-{nanos}", inp.key, std::process::id()));
            let moved = std::fs::rename(&final_dir, &stale);
            let r = std::fs::rename(&tmp, &final_dir);
            if moved.is_ok() {
                let _ = std::fs::remove_dir_all(&stale);
            }
            if let Err(e) = r {
                let _ = std::fs::remove_dir_all(&tmp);
                if !final_dir.join("manifest.json").exists() {
                    return Err(ImageError::io(&final_dir, e));
                }
            }
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ImageError::io(&final_dir, e));
        }
    }
    Ok(image_at(&final_dir, &inp.key))
}

fn build_into(inp: &Inputs, dir: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir).map_err(|e| ImageError::io(dir, e))?;
    let img = image_at(dir, &inp.key);
    std::fs::write(&img.kernel, &inp.kernel).map_err(|e| ImageError::io(&img.kernel, e))?;
    write_initrd(inp, &img.initrd)?;
    disk::build_data_disk(dir, &img.data_disk)?;
    let manifest = serde_json::json!({
        "key": inp.key,
        "builder": BUILDER_VERSION,
        "kernel_version": inp.kver,
        "modules": inp.modules.iter().map(|(m, _)| m.rel_path.clone()).collect::<Vec<_>>(),
        "applets": inp.applets.len(),
        "data_disk_mib": disk::DATA_DISK_MIB,
    });
    let p = dir.join("manifest.json");
    std::fs::write(&p, format!("{manifest:#}\n")).map_err(|e| ImageError::io(&p, e))?;
    Ok(())
}

/// Builds the static guest binary with
/// `cargo build --release -p vnsnap-guest --target x86_64-unknown-linux-gnu`
/// (`RUSTFLAGS=-C target-feature=+crt-static`, target dir `<repo_root>/target`
/// unless `VNSNAP_GUEST_TARGET_DIR` is set) and returns its path.
pub fn build_guest_binary(repo_root: &Path) -> Result<PathBuf, ImageError> {
    let target_dir = match std::env::var_os("VNSNAP_GUEST_TARGET_DIR") {
        Some(v) if !v.is_empty() => repo_root.join(PathBuf::from(v)),
        _ => repo_root.join("target"),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root)
        .args(["build", "--release", "-p", "vnsnap-guest", "--target", GUEST_TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    run_tool(&mut cmd)?;
    let bin = target_dir.join(GUEST_TARGET).join("release").join("vnsnap-guest");
    if !bin.exists() {
        return Err(ImageError::Missing(format!("{} after cargo build", bin.display())));
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options that use a private cache and busybox itself as a stand-in
    /// guest binary (the builder never runs it). `None` if the kernel or the
    /// tools are not installed.
    fn test_opts(tag: &str) -> Option<(BuildOptions, PathBuf)> {
        let root = repo_root();
        let kernel_dir = root.join(".cache/kernel");
        if !kernel_dir.join("vmlinuz").exists() {
            eprintln!("no kernel in {}; skipping", kernel_dir.display());
            return None;
        }
        for tool in ["mke2fs", "qemu-img"] {
            if Command::new(tool).arg("--version").output().is_err() {
                eprintln!("{tool} missing; skipping");
                return None;
            }
        }
        let cache = std::env::temp_dir().join(format!("vnsnap-img-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let mut opts = BuildOptions::new(&root, PathBuf::new());
        opts.guest_binary = opts.busybox.clone();
        opts.cache_dir = cache.clone();
        opts.kernel_dir = kernel_dir;
        // No package download into the private cache: the agent's files are one more input.
        opts.guest_agent = false;
        Some((opts, cache))
    }

    #[test]
    fn builds_caches_and_survives_concurrency() {
        let Some((opts, cache)) = test_opts("cache") else {
            return;
        };
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let o = opts.clone();
                std::thread::spawn(move || build(&o))
            })
            .collect();
        let imgs: Vec<GuestImage> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
        assert!(imgs.iter().all(|i| *i == imgs[0]));
        let img = &imgs[0];
        for p in [&img.kernel, &img.initrd, &img.data_disk] {
            assert!(p.metadata().unwrap().len() > 0, "{}", p.display());
        }
        // Exactly one image directory, no leftover temp dirs.
        let entries: Vec<_> = std::fs::read_dir(cache.join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries, vec![img.key.clone()]);
        // Cache hit: nothing rewritten.
        let mtime = img.initrd.metadata().unwrap().modified().unwrap();
        let again = build(&opts).unwrap();
        assert_eq!(&again, img);
        assert_eq!(img.initrd.metadata().unwrap().modified().unwrap(), mtime);
        // The initrd is gzip and contains /init and the modules list.
        let gz = std::fs::read(&img.initrd).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        for needle in ["init\0", "bin/vnsnap-guest\0", "etc/vnsnap/modules\0", "virtio_net.ko"] {
            assert!(text.contains(needle), "initrd lacks {needle}");
        }
        // A different input gives a different key.
        let mut other = opts.clone();
        other.modules = vec!["virtio_pci".into()];
        let img2 = build(&other).unwrap();
        assert_ne!(img2.key, img.key);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn cache_dir_env_is_relative_to_repo() {
        // Only checks the default branch to avoid racing on the environment.
        if std::env::var_os("VNSNAP_CACHE").is_none() {
            assert_eq!(cache_dir(Path::new("/r")), PathBuf::from("/r/.cache"));
        }
    }
}
