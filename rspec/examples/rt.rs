//! Reads an RSpec file and prints what the library writes back (a debugging aid).
use std::io::Read;
fn main() {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).unwrap();
    match vnsnap_rspec::parse(&s) {
        Ok(r) => print!("{}", r.to_xml()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
