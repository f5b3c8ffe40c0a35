//! The trusted side's git: what the control plane and the scheduler do with the targets'
//! repositories themselves (the untrusted worker runs its own). Today that is reading backlogs
//! ([`GitBacklog`]: one cached bare repository per target, brought up to date by a shallow
//! fetch); it runs git as the worker's [`shallow_clone`](leviathan_worker::shallow_clone) does,
//! isolated from the host's configuration, with the token only in git's environment.

mod backlog;

pub use self::backlog::GitBacklog;
