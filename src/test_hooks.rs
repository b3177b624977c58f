//! Hooks the end-to-end tests use to slow one part of a node down (a full click queue, a
//! lagging cluster node). Read from the environment only, under `DUANLIAN_TEST_` names: they are
//! not configuration, appear in no `--help`, and are zero unless a test sets them.
use std::time::Duration;

/// The delay in milliseconds that the environment variable `name` holds, or zero.
pub(crate) fn delay(name: &str) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}
