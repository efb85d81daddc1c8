//! Links the `tidemark` binary as a position-dependent executable on Linux.
//!
//! PostgreSQL starts one `tidemark archive-push` per WAL segment, so process start is on
//! the archiver's path. A position-independent binary of this size carries about 40,000
//! relative relocations that the dynamic loader applies at every start (a copy-on-write
//! fault for each page they touch, and the pages freed again at exit): linked without
//! them, process start measured 0.4 ms shorter (`docs/performance.md`). The objects stay
//! position-independent; only the final link changes. The cost is that the binary itself
//! loads at a fixed address (its libraries, stack and heap are still randomised), as the
//! Go-built tools in this field do by default.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
