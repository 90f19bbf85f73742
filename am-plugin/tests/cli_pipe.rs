//! The `vnsnap` CLI ends quietly when its reader goes away.

use std::process::{Command, Stdio};

#[test]
fn closed_stdout_ends_the_cli_quietly() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_vnsnap"))
        .arg("--help")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run vnsnap");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "vnsnap complained about a closed stdout: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "status {:?}", out.status);
}
