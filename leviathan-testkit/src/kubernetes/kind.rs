//! The kinds of object this fake serves, and how the API server names them.

/// The kinds this fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Job,
    Pod,
    Secret,
}

impl Kind {
    /// The plural resource name used in URLs and error messages.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        }
    }

    /// The API group (empty for the core group).
    pub(crate) fn group(self) -> &'static str {
        match self {
            Kind::Job => "batch",
            Kind::Pod | Kind::Secret => "",
        }
    }

    /// `jobs.batch` / `pods`: the resource as the API server names it in messages.
    pub(crate) fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }
}
