//! `lease-run-shim`: the supervisor `lease run` starts its command under (see the
//! `supervisor` module). A program of its own, with only what it needs, so that starting it
//! for each `lease run` costs little; `lease __exec-child` runs the same code when this
//! binary is not beside `lease`.
//!
//! Not meant to be run by hand: `lease-run-shim --parent PID [--deadline-file FILE]
//! [--go-on-stdin] -- CMD…`, where PID is its parent, which the shim watches, and standard
//! input, with `--go-on-stdin`, the socket on which `lease run` sends the go.

#![forbid(unsafe_code)]

#[path = "../supervisor/mod.rs"]
mod supervisor;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(supervisor::main(std::env::args_os().skip(1)))
}
