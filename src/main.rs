//! The `portico` binary. The gateway itself lands with the gateway issue; until then the binary
//! answers `--help` and `--version`.

use std::process::ExitCode;

const USAGE: &str = "\
portico: an API gateway data plane on Pingora, configured through etcd in APISIX's layout

Usage: portico [OPTIONS]

Options:
  -h, --help       Print this help
  -V, --version    Print the version
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-V") | Some("--version") => {
            println!("portico {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        None | Some("-h") | Some("--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("portico: unknown argument {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
