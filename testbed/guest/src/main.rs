//! `vnsnap-guest` binary entry point.

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: vnsnap-guest serve [--port-name NAME | --dev PATH | --stdio]\n\
         \n\
         serve  answer newline-delimited JSON requests on the virtio-serial port\n\
         \x20      named NAME (default vnsnap.ctl), on the device PATH, or on stdin/stdout"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {}
        _ => return usage(),
    }
    let mut target = vnsnap_guest::channel::Target::PortName("vnsnap.ctl".to_string());
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port-name" => match it.next() {
                Some(v) => target = vnsnap_guest::channel::Target::PortName(v.clone()),
                None => return usage(),
            },
            "--dev" => match it.next() {
                Some(v) => target = vnsnap_guest::channel::Target::Device(v.into()),
                None => return usage(),
            },
            "--stdio" => target = vnsnap_guest::channel::Target::Stdio,
            _ => return usage(),
        }
    }
    let guest = vnsnap_guest::ops::Guest::new();
    match vnsnap_guest::channel::serve(&target, &guest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnsnap-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
