//! The store's own error, which keeps its cause, and its one conversion into the domain error.

use keygate_domain::{Error, ErrorReason};

/// What can go wrong inside the store. Driver errors keep their source chain until the one
/// conversion into [`keygate_domain::Error`], which logs that chain.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The driver failed: connection trouble, a constraint, a decode of a column.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not decode into its domain type.
    #[error("{message}")]
    Corrupt {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An outcome the caller expects (not found, already exists, ...), passed through as is.
    #[error(transparent)]
    Domain(#[from] Error),
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A stored value that does not decode.
    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self::Corrupt {
            message: message.into(),
            source: None,
        }
    }

    /// Whether a unique constraint refused the write.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Db(e) if is_unique_violation(e))
    }

    /// Maps a unique violation to `conflict`; any other error stays as it is.
    pub(crate) fn on_unique(self, conflict: impl FnOnce() -> Error) -> Self {
        if self.is_unique_violation() {
            Self::Domain(conflict())
        } else {
            self
        }
    }
}

/// Another user identity of the workspace has the key.
pub(crate) fn user_identity_key_taken() -> Error {
    Error::AlreadyExists {
        reason: ErrorReason::UserIdentityKeyTaken,
        message: "another user identity in this workspace has this user_identity_key".into(),
    }
}

/// Another access grant of the workspace has the key.
pub(crate) fn access_grant_key_taken() -> Error {
    Error::AlreadyExists {
        reason: ErrorReason::AccessGrantKeyTaken,
        message: "another access grant in this workspace has this access_grant_key".into(),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// The causes of an error, outermost first, for the log.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s.to_string());
        next = s.source();
    }
    out
}

/// Driver errors map to the domain here, once: connection trouble is `Unavailable` (retryable),
/// the rest is `Internal`. Constraint violations that mean something to the caller were mapped
/// before, into [`StoreError::Domain`]. The messages are the driver's own, as before; the full
/// cause chain is logged here because the domain error carries only a message.
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(e) => e,
            StoreError::Db(
                ref inner @ (sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed),
            ) => {
                tracing::warn!(error = ?chain(inner), "store unavailable");
                Error::Unavailable {
                    message: inner.to_string(),
                }
            }
            StoreError::Db(inner) => {
                tracing::error!(error = ?chain(&inner), "store error");
                Error::Internal {
                    message: inner.to_string(),
                }
            }
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(inner)) => {
                Self::from(StoreError::Db(inner))
            }
            other @ (StoreError::Migrate(_) | StoreError::Corrupt { .. }) => {
                tracing::error!(error = ?chain(&other), "store error");
                Error::Internal {
                    message: other.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_unavailable_and_the_rest_internal() {
        assert!(matches!(
            Error::from(StoreError::from(sqlx::Error::PoolTimedOut)),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            Error::from(StoreError::from(sqlx::Error::RowNotFound)),
            Error::Internal { .. }
        ));
        let nf = Error::not_found(keygate_domain::Resource::Webhook, "w".to_owned());
        assert!(matches!(
            Error::from(StoreError::from(nf)),
            Error::NotFound { .. }
        ));
    }

    #[test]
    fn corrupt_keeps_its_source() {
        let cause = "x".parse::<i64>().unwrap_err();
        let e = StoreError::Corrupt {
            message: "stored number is not one".into(),
            source: Some(Box::new(cause)),
        };
        assert_eq!(chain(&e).len(), 2);
        assert!(
            matches!(Error::from(e), Error::Internal { message } if message == "stored number is not one")
        );
    }
}
