//! The test harness: real components, started per test.
//!
//! - [`s3`]: an s3s-fs server on a free loopback port, stoppable and restartable.

pub mod s3;

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
