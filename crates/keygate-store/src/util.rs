//! Conversions shared by both backends.

use time::OffsetDateTime;

use crate::error::{StoreError, StoreResult};

/// Times are stored as Unix microseconds in both dialects.
pub(crate) fn to_micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_micros(us: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).map_err(|e| {
        StoreError::Corrupt {
            message: format!("stored time {us} out of range: {e}"),
            source: Some(Box::new(e)),
        }
    })
}

pub(crate) fn parse<T: std::str::FromStr>(what: &str, s: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|_| StoreError::corrupt(format!("stored {what} {s:?} is not a valid id")))
}

/// Splits a fetched `limit + 1` rows into a page and the id to continue after.
pub(crate) fn into_page<T>(
    mut items: Vec<T>,
    limit: u32,
    id_of: impl Fn(&T) -> String,
) -> keygate_domain::page::Page<T> {
    let limit = limit as usize;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_after = if more { items.last().map(id_of) } else { None };
    keygate_domain::page::Page { items, next_after }
}

/// Rows to fetch for a page: one more than asked, to know whether another page exists.
pub(crate) fn fetch_limit(limit: u32) -> i64 {
    i64::from(limit) + 1
}
