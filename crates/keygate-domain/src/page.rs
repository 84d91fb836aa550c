//! Page sizes for list calls (AIP-158): 0 means the default, over the maximum is clamped,
//! negative is an error.

use crate::error::{Error, ErrorReason};

/// Page size used when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page ever returned.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Turns a requested `page_size` into the number of rows to return.
pub fn page_size(requested: i32) -> Result<u32, Error> {
    match requested {
        n if n < 0 => Err(Error::InvalidToken {
            reason: ErrorReason::InvalidPageSize,
            message: format!("page_size must not be negative (got {n})"),
        }),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(u32::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

/// A request for one page: rows strictly after `after` (an id), at most `limit` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

/// One page of results and the id to continue after, when there may be more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_rules() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(100_000).ok(), Some(MAX_PAGE_SIZE));
        assert!(matches!(
            page_size(-1),
            Err(Error::InvalidToken {
                reason: ErrorReason::InvalidPageSize,
                ..
            })
        ));
    }
}
