//! Leviathan: an event-sourced control plane for autonomous coding agents.
//!
//! This facade re-exports the workspace crates, each behind a feature, so that an embedding
//! service needs one dependency and links only what it uses. Every feature is on by default;
//! the `leviathan` binary needs them all.
//!
//! | Feature | Gives |
//! |---|---|
//! | (always) | [`core`] (model, events, projection, planner, ports, memory backends), [`scheduler`] (the runner over core's ports), [`stores`] (opening stores by URL; `memory:` always), [`api`] (the wire: JSON shapes, error codes, the token file) |
//! | `server` | in [`api`]: the axum router, `ControlPlane`, metrics |
//! | `client` | [`api`]`::client`: the typed client and `RemoteEventStore` |
//! | `store-sled` | `store_sled` (the embedded backend), `sled:` store URLs |
//! | `store-pg` | `store_pg` (the PostgreSQL backend), `postgres://` store URLs |
//! | `exec-local` | `exec_local` (the local executor) |
//! | `exec-k8s` | `exec_k8s` (the Kubernetes executor) |
//! | `worker` | `worker` (one attempt end to end, the GitHub forge), `git` (the git backlog source) |

pub use leviathan_api as api;
pub use leviathan_core as core;
#[cfg(feature = "exec-k8s")]
pub use leviathan_exec_k8s as exec_k8s;
#[cfg(feature = "exec-local")]
pub use leviathan_exec_local as exec_local;
#[cfg(feature = "store-pg")]
pub use leviathan_store_pg as store_pg;
#[cfg(feature = "store-sled")]
pub use leviathan_store_sled as store_sled;
#[cfg(feature = "worker")]
pub use leviathan_worker as worker;

#[cfg(feature = "worker")]
pub mod delivery;
#[cfg(feature = "worker")]
pub mod git;
pub mod scheduler;
pub mod stores;
