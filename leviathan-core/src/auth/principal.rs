//! The roles of the control plane's tokens and the principal a request acts as: plain data,
//! recorded in events and read by every entry point's authorisation.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::id::{AttemptId, TokenId};

/// What a token may do (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Read, invalidate, cancel.
    Operator,
    /// Read only.
    Reader,
    /// The scheduling events and worker tokens.
    Scheduler,
    /// One attempt.
    Worker,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Self::Admin,
        Self::Operator,
        Self::Reader,
        Self::Scheduler,
        Self::Worker,
    ];

    /// The role's name on the wire and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Reader => "reader",
            Self::Scheduler => "scheduler",
            Self::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no role.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected admin, operator, reader, scheduler or worker")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(crate::text::ellipsize(s, 32)))
    }
}

/// Who makes a request: the token's id and role and, for a worker, the attempt it is bound to.
/// The server records it in every event it appends, whatever `actor_id` the client sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The token's public id.
    pub token_id: TokenId,
    /// Its role.
    pub role: Role,
    /// The attempt a worker token is bound to (`None` for every other role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptId>,
}

impl Principal {
    /// A principal of a role that is bound to no attempt.
    pub fn new(token_id: TokenId, role: Role) -> Self {
        Self {
            token_id,
            role,
            attempt: None,
        }
    }

    /// The principal of a worker token bound to `attempt`.
    pub fn worker(token_id: TokenId, attempt: AttemptId) -> Self {
        Self {
            token_id,
            role: Role::Worker,
            attempt: Some(attempt),
        }
    }
}

impl fmt::Display for Principal {
    /// `worker token `tok-1` of attempt `a1``, `reader token `tok-2``: what errors name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} token `{}`", self.role, self.token_id)?;
        match &self.attempt {
            Some(attempt) => write!(f, " of attempt `{attempt}`"),
            None => Ok(()),
        }
    }
}
