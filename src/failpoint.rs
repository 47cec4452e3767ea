//! Crash-test hooks: `failpoint("name")` aborts the process, as `kill -9`
//! would, when `TRAILKEEP_TEST_FAILPOINT` names the point. Compiled in only
//! with the `testing` feature (scripts/test.sh); in any other build it is
//! an empty function the optimizer removes.

/// Aborts here when `TRAILKEEP_TEST_FAILPOINT` is `name` (`testing` builds).
#[inline]
pub fn failpoint(name: &str) {
    #[cfg(feature = "testing")]
    if std::env::var("TRAILKEEP_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("trailkeep: failpoint {name}: aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "testing"))]
    let _ = name;
}
