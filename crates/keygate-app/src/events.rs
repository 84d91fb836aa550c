//! Event cursors: where a listing or a watch of the event log resumes.

use keygate_domain::ids::WorkspaceId;
use keygate_domain::{Error, ErrorReason};

use crate::tokens::{PageScope, PageTokens};

/// Cursors are sealed like page tokens, bound to the workspace (not to a filter: one cursor
/// resumes any watch of that workspace).
fn cursor_scope(ws: WorkspaceId) -> PageScope<'static> {
    PageScope::workspace(ws, &["event_cursor"])
}

/// The cursor of the event at `seq` (also the `cursor` of webhook deliveries).
pub fn seal_cursor(tokens: &PageTokens, ws: WorkspaceId, seq: i64) -> Result<String, Error> {
    tokens.seal(&cursor_scope(ws), Some(seq.to_string()))
}

pub fn open_cursor(
    tokens: &PageTokens,
    ws: WorkspaceId,
    cursor: &str,
) -> Result<Option<i64>, Error> {
    let bad = |_| Error::InvalidToken {
        reason: ErrorReason::InvalidCursor,
        message: "cursor is invalid or from another workspace".into(),
    };
    match tokens.open(&cursor_scope(ws), cursor).map_err(bad)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| Error::InvalidToken {
            reason: ErrorReason::InvalidCursor,
            message: "cursor is malformed".into(),
        }),
    }
}
