//! Snapshot and restore of one Xen domain.
//!
//! The cut of a Xen domain is its suspension: from then on it can neither send nor
//! receive, and everything the snapshot holds is its state at that instant. Two ways to
//! take the memory image, both ending with the domain running on as before:
//!
//! - **Stop-and-copy** ([`checkpoint_stop_copy`]): `xl save -c`. The domain is suspended,
//!   its whole memory written, then resumed: the pause grows with the RAM size. The rest
//!   of the cut runs once `xl list` shows the domain suspended.
//! - **Live** ([`checkpoint_live`]): `xl migrate`, whose sender pre-copies memory while
//!   the domain runs (log-dirty rounds) and suspends it only for the last dirty pages and
//!   the vCPU state. The "remote host" is the agent itself: xl's ssh command is a small
//!   script that joins xl's pipes to two FIFOs the agent serves. The agent plays the
//!   receiver: it sends xl's banner, copies the stream into the image file and sees its
//!   end ([`super::stream`]); at that point the domain is suspended, and the agent runs
//!   the rest of the cut (`at_cut`: switch ports, disks). Then, instead of the
//!   receiver's "ready" message, it closes its side: xl takes the migration as failed and
//!   resumes the domain at the sender ("Migration failed, resuming at sender."), which
//!   for a PV guest is a cancelled suspend (it carries on without reconnecting devices).
//!   The pause is the last round plus the cut, not the whole memory.
//!
//! Both image files are xl save files: `xl restore -p` starts a domain from either,
//! paused, and the slice is resumed together.

use super::stream;
use crate::domain::DriverError;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// xl's receiver banner (xl_migrate.c), sent before the stream flows.
const BANNER: &[u8] = b"xl migration receiver ready, send binary domain data.\n";

/// What a checkpoint measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Bytes of the image.
    pub bytes: u64,
    /// Time the domain did not run, as the agent sees it (µs): for stop-and-copy the
    /// whole `xl save -c`; for the live method from the end of the stream (the domain is
    /// suspended) to xl's exit after it resumed the domain, plus xl's final round.
    pub pause_us: u64,
    /// Whole operation (µs).
    pub total_us: u64,
}

/// The receiver side of `xl migrate`'s transport: xl runs `exec <this> <dir> xl
/// migrate-receive`, and the script joins xl's pipes to `<dir>/in.fifo` (stream from xl)
/// and `<dir>/out.fifo` (messages to xl). A background job's stdin is /dev/null unless
/// redirected, hence the copy of fd 0 to fd 3 first.
pub const RECEIVER_SCRIPT: &str = "#!/bin/sh\n# vnsnap-agent: xl migrate transport to the agent's FIFOs (generated)\n\
exec 3<&0\ncat <&3 >\"$1/in.fifo\" &\nexec cat <\"$1/out.fifo\"\n";

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> DriverError {
    move |e| DriverError::Io(what, e)
}

fn mkfifo(p: &Path) -> Result<(), DriverError> {
    let _ = std::fs::remove_file(p);
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| DriverError::Image(format!("bad path {}", p.display())))?;
    // SAFETY: mkfifo with a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(DriverError::Io(format!("mkfifo {}", p.display()), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Opens the write end of a FIFO, waiting up to `timeout` for its reader.
fn open_writer(p: &Path, timeout: Duration) -> Result<std::fs::File, DriverError> {
    let deadline = Instant::now() + timeout;
    loop {
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(p) {
            Ok(f) => {
                // Back to blocking writes.
                use std::os::fd::AsRawFd;
                // SAFETY: fcntl on an fd we own.
                unsafe {
                    let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
                }
                return Ok(f);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(DriverError::Io(format!("opening {}", p.display()), e)),
        }
    }
}

/// Stop-and-copy: `xl save -c` of `xen_name` into `out`; the domain runs again afterwards.
/// xl suspends the domain itself (a PV guest must acknowledge the request, so it cannot
/// be paused beforehand); `at_cut` runs as soon as `xl list` shows it suspended, while xl
/// is still writing its memory. The pause is the whole `xl save -c`.
pub fn checkpoint_stop_copy(
    xl: &Path,
    xen_name: &str,
    out: &Path,
    at_cut: impl FnOnce() -> Result<(), DriverError>,
) -> Result<Checkpoint, DriverError> {
    let t0 = Instant::now();
    let mut child = Command::new(xl)
        .args(["save", "-c", xen_name])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("running xl save".into()))?;
    let mut at_cut = Some(at_cut);
    let mut cut = Ok(());
    while at_cut.is_some() {
        if child.try_wait().map_err(io_err("waiting for xl save".into()))?.is_some() {
            break;
        }
        let suspended = Command::new(xl)
            .args(["list", xen_name])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1).map(str::to_string))
            .and_then(|l| l.split_whitespace().nth(4).map(|st| st.contains('s')))
            .unwrap_or(false);
        if suspended {
            cut = (at_cut.take().expect("checked"))();
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let o = child.wait_with_output().map_err(io_err("waiting for xl save".into()))?;
    let total = t0.elapsed();
    if !o.status.success() {
        return Err(DriverError::Monitor("xl save", String::from_utf8_lossy(&o.stderr).trim().to_string()));
    }
    if at_cut.is_some() {
        return Err(DriverError::Monitor("xl save", "the domain was never seen suspended: no cut taken".into()));
    }
    cut?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let us = total.as_micros() as u64;
    Ok(Checkpoint { bytes, pause_us: us, total_us: us })
}

/// Live checkpoint of `xen_name` into `out` through `xl migrate` (see the module docs).
/// `work` is an empty directory for the FIFOs and xl's log. `at_cut` runs while the
/// domain is suspended, before it is resumed; its error aborts nothing (the domain is
/// resumed either way) but is returned.
pub fn checkpoint_live(
    xl: &Path,
    xen_name: &str,
    out: &Path,
    work: &Path,
    at_cut: impl FnOnce() -> Result<(), DriverError>,
) -> Result<Checkpoint, DriverError> {
    let t0 = Instant::now();
    std::fs::create_dir_all(work).map_err(io_err(format!("creating {}", work.display())))?;
    let script = work.join("xl-transport");
    std::fs::write(&script, RECEIVER_SCRIPT).map_err(io_err(format!("writing {}", script.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("chmod {}", script.display())))?;
    let (inp, outp) = (work.join("in.fifo"), work.join("out.fifo"));
    mkfifo(&inp)?;
    mkfifo(&outp)?;
    let log = std::fs::File::create(work.join("xl-migrate.log")).map_err(io_err("creating xl log".into()))?;
    let mut child = Command::new(xl)
        .args(["migrate", "-s"])
        .arg(&script)
        .arg(xen_name)
        .arg(work)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err("xl log".into()))?)
        .stderr(log)
        .spawn()
        .map_err(io_err("running xl migrate".into()))?;
    let result = (|| -> Result<(u64, Instant), DriverError> {
        let mut to_xl = open_writer(&outp, Duration::from_secs(60))?;
        to_xl.write_all(BANNER).map_err(io_err("sending the banner to xl".into()))?;
        let mut from_xl = std::fs::File::open(&inp).map_err(io_err(format!("opening {}", inp.display())))?;
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(out).map_err(io_err(format!("creating {}", out.display())))?,
        );
        let bytes = stream::copy_stream(&mut from_xl, &mut file).map_err(io_err("receiving the stream".into()))?;
        // The stream is complete: the domain is suspended, its state is all in `out`.
        let suspended = Instant::now();
        file.flush().map_err(io_err(format!("writing {}", out.display())))?;
        drop(to_xl);
        Ok((bytes, suspended))
    })();
    // Whatever happened, xl must be left to resume the domain: the cut work runs now,
    // and closing our FIFO ends (on success) or aborts (on failure) the migration, at
    // which point xl resumes the domain at the sender and exits.
    let (bytes, suspended) = match result {
        Ok(x) => x,
        Err(e) => {
            // Unblock the transport's two `cat`s whatever state they are in (an O_RDWR
            // open of a FIFO never blocks); xl then fails the migration and resumes.
            for f in [&inp, &outp] {
                let _ = std::fs::OpenOptions::new().read(true).write(true).open(f);
            }
            let _ = child.wait();
            let xl_log = std::fs::read_to_string(work.join("xl-migrate.log")).unwrap_or_default();
            let tail: Vec<&str> = xl_log.lines().rev().take(8).collect();
            let cause = match &e {
                DriverError::Io(what, err) => format!("{what}: {err}"),
                other => other.to_string(),
            };
            return Err(DriverError::Monitor(
                "xl migrate",
                format!("{cause}; xl says: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")),
            ));
        }
    };
    let cut = at_cut();
    let status = child.wait().map_err(io_err("waiting for xl migrate".into()))?;
    let resumed = Instant::now();
    let xl_log = std::fs::read_to_string(work.join("xl-migrate.log")).unwrap_or_default();
    if status.success() || !xl_log.contains("resuming at sender") {
        return Err(DriverError::Monitor("xl migrate", format!("unexpected end of the checkpoint: {xl_log}")));
    }
    cut?;
    Ok(Checkpoint {
        bytes,
        pause_us: resumed.duration_since(suspended).as_micros() as u64,
        total_us: t0.elapsed().as_micros() as u64,
    })
}

/// Starts a domain from an xl save file, paused (`xl restore -p`), with `config`
/// replacing the stored one (new disk files, same vifs).
pub fn restore_paused(xl: &Path, config: &Path, image: &Path) -> Result<(), DriverError> {
    let o = Command::new(xl)
        .args(["restore", "-p"])
        .arg(config)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("running xl restore".into()))?;
    if !o.status.success() {
        return Err(DriverError::Monitor("xl restore", String::from_utf8_lossy(&o.stderr).trim().to_string()));
    }
    Ok(())
}

/// Copies a raw disk file for the cut (sparse regions stay sparse where the file system
/// allows: `cp --sparse=always`, or a reflink where it can).
pub fn copy_disk(from: &Path, to: &Path) -> Result<(), DriverError> {
    let o = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(from)
        .arg(to)
        .output()
        .map_err(io_err("running cp".into()))?;
    if !o.status.success() {
        return Err(DriverError::Image(String::from_utf8_lossy(&o.stderr).trim().to_string()));
    }
    Ok(())
}

/// Where the image of domain `name` goes in a snapshot directory.
pub fn image_path(dir: &Path) -> PathBuf {
    dir.join("memory.xl")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `xl` that plays the sender side of `xl migrate` with a canned stream: it
    /// runs the transport script as xl does, waits for the banner, writes the stream,
    /// then waits for the "ready" message, fails to read it and "resumes at sender".
    fn fake_xl(dir: &Path, stream: &Path) -> PathBuf {
        let p = dir.join("fake-xl");
        let script = format!(
            r#"#!/bin/bash
[ "$1" = migrate ] || exit 9
T=$3; W=$5
coproc X {{ exec "$T" "$W" xl migrate-receive; }}
read -r banner <&"${{X[0]}}"
[ "$banner" = "xl migration receiver ready, send binary domain data." ] || exit 8
cat '{stream}' >&"${{X[1]}}"
if read -r ready <&"${{X[0]}}"; then echo "unexpected ready: $ready"; exit 0; fi
exec {{X[1]}}>&-
wait
echo "Migration failed, resuming at sender."
exit 1
"#,
            stream = stream.display()
        );
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn live_checkpoint_receives_the_stream_runs_the_cut_then_lets_xl_resume() {
        let t = tempfile::tempdir().unwrap();
        let sample = stream::tests::sample();
        std::fs::write(t.path().join("stream"), &sample).unwrap();
        let xl = fake_xl(t.path(), &t.path().join("stream"));
        let out = t.path().join("memory.xl");
        let mut cut_ran = false;
        let c = checkpoint_live(&xl, "vnsnap-vm1", &out, &t.path().join("work"), || {
            cut_ran = true;
            Ok(())
        })
        .unwrap();
        assert!(cut_ran);
        assert_eq!(c.bytes as usize, sample.len());
        assert_eq!(std::fs::read(&out).unwrap(), sample);
        assert!(c.pause_us <= c.total_us);
    }

    #[test]
    fn transport_script_keeps_xls_stdin_for_the_background_copy() {
        assert!(RECEIVER_SCRIPT.contains("exec 3<&0\ncat <&3"));
    }
}
