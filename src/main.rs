//! `portico`: the gateway binary, with every built-in plugin.

use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    portico::server::run(portico::plugin::Registry::builtin())
}
