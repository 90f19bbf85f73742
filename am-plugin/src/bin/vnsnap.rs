//! `vnsnap`: the experimenter's CLI for slice snapshots (see `vnsnap_am::cli`).

fn main() {
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
