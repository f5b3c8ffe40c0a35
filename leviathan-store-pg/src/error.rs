//! Mapping sqlx errors to core's error enums by kind and SQLSTATE, never by message text.

use std::sync::Arc;

use leviathan_core::{ArtifactError, EventStoreError, GraphStoreError};

/// Whether retrying the same call may succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The server is unreachable, restarting, overloaded, or the transaction lost a race.
    Transient,
    /// Anything else: bad data, constraint violations, misconfiguration, bugs.
    Permanent,
}

/// Classifies an sqlx error: lost or refused connections, pool timeouts, serialization failures
/// and deadlocks (40001, 40P01), shutdowns (57P01-57P03), connection exceptions (08xxx) and
/// insufficient resources (53xxx) are transient; everything else is permanent.
pub(crate) fn classify(err: &sqlx::Error) -> ErrorClass {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            ErrorClass::Transient
        }
        sqlx::Error::Database(db) => db
            .code()
            .map_or(ErrorClass::Permanent, |code| classify_sqlstate(&code)),
        sqlx::Error::Migrate(migrate) => classify_migrate(migrate),
        _ => ErrorClass::Permanent,
    }
}

/// Classifies a migration failure by the database error behind it, if any.
pub(crate) fn classify_migrate(err: &sqlx::migrate::MigrateError) -> ErrorClass {
    match err {
        sqlx::migrate::MigrateError::Execute(inner)
        | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => classify(inner),
        _ => ErrorClass::Permanent,
    }
}

/// Classifies a PostgreSQL SQLSTATE.
pub(crate) fn classify_sqlstate(code: &str) -> ErrorClass {
    let transient = code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03");
    if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// What kind of event store error a [`StoreFailure`] becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// [`EventStoreError::Unavailable`].
    Unavailable,
    /// [`EventStoreError::Backend`].
    Backend,
    /// [`EventStoreError::Corrupt`], at a seq when known.
    Corrupt(Option<u64>),
}

/// A failure with what was being done, shareable between the callers of one group commit (each
/// caller gets its own [`EventStoreError`] built from it, with the same source).
#[derive(Clone, Debug)]
pub(crate) struct StoreFailure {
    /// What was being done and what went wrong, e.g. `appending 3 events: <cause>`.
    pub(crate) reason: String,
    /// Which error it becomes.
    pub(crate) kind: FailureKind,
    /// The underlying error, if any.
    pub(crate) source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreFailure {
    /// A failure caused by `err` while doing `context`.
    pub(crate) fn sql(context: impl std::fmt::Display, err: sqlx::Error) -> Self {
        Self::rendered(
            format!("{context}: {err}"),
            classify(&err),
            Some(Arc::new(err)),
        )
    }

    /// A failure whose cause was already rendered (and scrubbed of secrets) as `reason`.
    pub(crate) fn rendered(
        reason: String,
        class: ErrorClass,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            reason,
            kind: match class {
                ErrorClass::Transient => FailureKind::Unavailable,
                ErrorClass::Permanent => FailureKind::Backend,
            },
            source,
        }
    }

    /// Stored data that does not decode or does not continue what was known.
    pub(crate) fn corrupt(seq: Option<u64>, reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            kind: FailureKind::Corrupt(seq),
            source: None,
        }
    }

    /// True when retrying may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        self.kind == FailureKind::Unavailable
    }

    /// As an event store error.
    pub(crate) fn to_event_error(&self) -> EventStoreError {
        let source = self
            .source
            .clone()
            .map(|s| Box::new(s) as leviathan_core::store::BoxError);
        let reason = self.reason.clone();
        match self.kind {
            FailureKind::Unavailable => EventStoreError::Unavailable { reason, source },
            FailureKind::Backend => EventStoreError::Backend { reason, source },
            FailureKind::Corrupt(seq) => EventStoreError::Corrupt { seq, reason },
        }
    }
}

/// Maps an sqlx error met while doing `context` to an [`EventStoreError`].
pub(crate) fn event_error(context: impl std::fmt::Display, err: sqlx::Error) -> EventStoreError {
    StoreFailure::sql(context, err).to_event_error()
}

/// Maps an sqlx error met while doing `context` to a [`GraphStoreError`].
pub(crate) fn graph_error(context: impl std::fmt::Display, err: sqlx::Error) -> GraphStoreError {
    let reason = format!("{context}: {err}");
    match classify(&err) {
        ErrorClass::Transient => GraphStoreError::Unavailable {
            reason,
            source: Some(Box::new(err)),
        },
        ErrorClass::Permanent => GraphStoreError::Backend {
            reason,
            source: Some(Box::new(err)),
        },
    }
}

/// Maps an sqlx error met while doing `context` to an [`ArtifactError`].
pub(crate) fn artifact_error(context: impl std::fmt::Display, err: sqlx::Error) -> ArtifactError {
    let reason = format!("{context}: {err}");
    match classify(&err) {
        ErrorClass::Transient => ArtifactError::Unavailable {
            reason,
            source: Some(Box::new(err)),
        },
        ErrorClass::Permanent => ArtifactError::Backend {
            reason,
            source: Some(Box::new(err)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        for code in [
            "40001", "40P01", "57P01", "57P02", "57P03", "53100", "53300", "08006", "08001",
        ] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Transient, "{code}");
        }
        for code in [
            "23505", "23503", "22P02", "42P01", "3D000", "28P01", "23001", "P0001",
        ] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn error_kinds() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&io), ErrorClass::Transient);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Transient);
        assert_eq!(classify(&sqlx::Error::RowNotFound), ErrorClass::Permanent);
        assert!(event_error("reading", sqlx::Error::PoolTimedOut).is_transient());
        assert!(!event_error("reading", sqlx::Error::RowNotFound).is_transient());
    }
}
