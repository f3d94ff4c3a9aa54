//! Builds this crate, and the window table file it includes, with `cfg(loom)`, so the table
//! takes loom's locks. Set here rather than through `RUSTFLAGS`, so that no dependency is
//! rebuilt for it and the crate builds in any target dir alongside the rest of the workspace.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
    println!("cargo::rustc-cfg=loom");
}
