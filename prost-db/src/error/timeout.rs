//! PostgreSQL's timeout settings: durations to whole milliseconds, within range.

use std::time::Duration;

use super::{Error, Result};

/// PostgreSQL's timeout settings are whole milliseconds in a 32-bit integer.
pub(super) const MAX_PG_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// `timeout` in whole milliseconds for a PostgreSQL setting, rounded up (a non-zero
/// timeout never becomes `0`, which would mean "no timeout").
///
/// # Errors
///
/// [`Error::SettingOutOfRange`] beyond 2147483647 ms.
pub(crate) fn pg_timeout_millis(setting: &'static str, timeout: Duration) -> Result<u32> {
    if timeout > MAX_PG_TIMEOUT {
        return Err(Error::SettingOutOfRange {
            setting,
            value: timeout,
            max: MAX_PG_TIMEOUT,
        });
    }
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    Ok(u32::try_from(millis).unwrap_or(i32::MAX as u32))
}
