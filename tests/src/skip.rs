//! What a test does when the server it needs cannot be had: in CI it fails (CI must not
//! skip), elsewhere it is skipped *visibly*. libtest has no way to turn a running test into an
//! ignored one, so a skipped test still shows `ok`; to keep that from passing for a success,
//! each skip is written to stderr and, when `PYLOCK_SKIP_LOG` names a file, appended to it
//! with the test's name. `scripts/test.sh` sets it and ends with the list of skipped tests.

use std::io::Write;

/// Whether this run is CI's (`CI=true` or `CI=1`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the current test for `reason` (see the module docs): panics in CI, otherwise
/// records the skip and returns, so the caller returns `None` or ends the test.
pub fn skip(reason: &str) {
    assert!(!in_ci(), "{reason} (CI must not skip a test)");
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    // One write per line, so that tests skipping at once do not interleave in the log.
    let line = format!("SKIPPED (not in CI) {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("PYLOCK_SKIP_LOG") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut log| log.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(std::io::stderr(), "could not record the skip: {e}");
        }
    }
}
