//! The test harness: real components, started per test.
//!
//! - [`pg`]: a real PostgreSQL cluster per test, run as an unprivileged user when root;
//! - [`s3`]: an s3s-fs server on a free loopback port, stoppable and restartable;
//! - [`tidemark`]: runs the built binary, and snapshots a local repository.

pub mod pg;
pub mod s3;
pub mod tidemark;

/// Skips a test with a printed reason, or fails it under `CI` (where everything must exist).
#[macro_export]
macro_rules! skip_or_fail {
    ($($arg:tt)*) => {{
        let why = format!($($arg)*);
        if std::env::var_os("CI").is_some() {
            panic!("required test component missing under CI: {why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }};
}
