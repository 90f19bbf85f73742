//! `vnsnap`: the experimenter's CLI for slice snapshots (see `vnsnap_am::cli`).

fn main() {
    // Like any Unix tool: a reader that stops reading (`vnsnap snapshots --json | head`)
    // ends the program quietly, instead of an error on every later write.
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // One line, no backtrace, even for a bug.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("vnsnap: internal error: {}", msg.replace('\n', "; "));
    }));
    std::process::exit(vnsnap_am::cli::main(std::env::args_os()));
}
