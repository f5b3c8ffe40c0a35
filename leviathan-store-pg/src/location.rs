//! The database URL: parsed into connect options, and named in errors without its password.

use std::{fmt, str::FromStr, sync::Arc};

use leviathan_core::EventStoreError;
use percent_encoding::percent_decode_str;
use sqlx::postgres::PgConnectOptions;

use crate::error::{ErrorClass, StoreFailure, classify, classify_migrate};

/// A database location: connect options plus a printable form with the password masked.
#[derive(Clone)]
pub(crate) struct Location {
    options: PgConnectOptions,
    redacted: String,
    secrets: Vec<String>,
}

/// An error message that has been scrubbed of the URL's password (it replaces the original
/// sqlx error as the source of connect-time errors, whose text we do not control).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ScrubbedError(String);

impl Location {
    /// Parses a `postgres://` URL. The error never contains the URL.
    pub(crate) fn parse(url: &str) -> Result<Self, EventStoreError> {
        let invalid = |reason: String| EventStoreError::Backend {
            reason: format!("invalid PostgreSQL URL: {reason}"),
            source: None,
        };
        let mut parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid(format!(
                "scheme `{}` is not `postgres` or `postgresql`",
                parsed.scheme()
            )));
        }
        let mut secrets = Vec::new();
        if let Some(password) = parsed.password().filter(|p| !p.is_empty()) {
            secrets.push(password.to_owned());
            // Decoded as the driver decodes it; invalid escapes stay as they are.
            let decoded = percent_decode_str(password).decode_utf8_lossy();
            if decoded != password {
                secrets.push(decoded.into_owned());
            }
        }
        let mut location = Self {
            options: PgConnectOptions::default(),
            redacted: String::new(),
            secrets,
        };
        location.options =
            PgConnectOptions::from_str(url).map_err(|e| invalid(location.scrub(&e.to_string())))?;
        if !location.secrets.is_empty() {
            // Cannot fail: the URL has a host, since it has a password.
            let _ = parsed.set_password(Some("***"));
        }
        location.redacted = parsed.to_string();
        Ok(location)
    }

    /// Options for one of the store's connections.
    ///
    /// `plan_cache_mode = force_custom_plan`: PostgreSQL otherwise switches a prepared statement
    /// to a cached generic plan after a few executions, and a plan cached while the log was small
    /// (a sequential scan for `event_id = ANY($1)`) stays in use as the log grows, making every
    /// append slower than the last. The store's statements are short lookups whose planning costs
    /// far less than that.
    pub(crate) fn connect_options(&self, application_name: &str) -> PgConnectOptions {
        self.options
            .clone()
            .application_name(application_name)
            .options([("plan_cache_mode", "force_custom_plan")])
    }

    /// Options for the event writer's connection, which runs a few statements many times a
    /// second: planning them afresh each time took a third of its server time with small groups.
    /// So it keeps generic plans, and `enable_seqscan = off` makes them index lookups whatever
    /// the size of the log when they were planned (see [`Self::connect_options`]); the writer
    /// looks events and streams up only by their keys. A disabled scan counts as a huge cost, which
    /// would have every statement JIT-compiled (150 ms each), hence `jit = off`.
    pub(crate) fn writer_connect_options(&self, application_name: &str) -> PgConnectOptions {
        self.options
            .clone()
            .application_name(application_name)
            .options([
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
                ("jit", "off"),
            ])
    }

    /// `text` with every occurrence of the password masked.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }

    /// An error met while connecting to the database, scrubbed of the password.
    pub(crate) fn connect_error(&self, doing: &str, err: &sqlx::Error) -> EventStoreError {
        self.connect_failure(doing, err).to_event_error()
    }

    /// A failure to connect, scrubbed of the password.
    pub(crate) fn connect_failure(&self, doing: &str, err: &sqlx::Error) -> StoreFailure {
        self.scrubbed(doing, &err.to_string(), classify(err))
    }

    /// A migration failure, scrubbed of the password.
    pub(crate) fn migrate_error(&self, err: &sqlx::migrate::MigrateError) -> EventStoreError {
        self.scrubbed(
            "applying the schema migrations",
            &err.to_string(),
            classify_migrate(err),
        )
        .to_event_error()
    }

    fn scrubbed(&self, doing: &str, cause: &str, class: ErrorClass) -> StoreFailure {
        let cause = self.scrub(cause);
        let reason = format!("{doing} at {self}: {cause}");
        StoreFailure::rendered(reason, class, Some(Arc::new(ScrubbedError(cause))))
    }
}

/// The URL with its password masked.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Location").field(&self.redacted).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_masked() {
        let location = Location::parse("postgres://app:p%40ss-w0rd@db.example:5432/levi").unwrap();
        let shown = location.to_string();
        assert_eq!(shown, "postgres://app:***@db.example:5432/levi");
        assert!(!format!("{location:?}").contains("w0rd"));
        assert_eq!(
            location.scrub("bad p@ss-w0rd and p%40ss-w0rd"),
            "bad *** and ***"
        );
    }

    #[test]
    fn invalid_urls_do_not_echo_the_password() {
        for url in [
            "postgres://app:hunter2-secret@db.example:99999/levi",
            "mysql://app:hunter2-secret@db.example/levi",
            "postgres://app:hunter2-secret@db.example/levi?sslmode=sometimes",
        ] {
            let err = Location::parse(url).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("invalid PostgreSQL URL"), "{text}");
        }
    }
}
