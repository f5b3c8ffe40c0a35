//! Dev-only fakes that speak real protocols on 127.0.0.1, so that Leviathan's real clients
//! (`kube`, `octocrab`, the git CLI, our HTTP model clients) are tested end to end.
//!
//! Nothing here is a mock of Leviathan code: each fake implements the wire protocol of the
//! system it stands for, and is driven by the same client a production deployment uses.

pub mod server;

#[cfg(feature = "github")]
pub mod github;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
#[cfg(feature = "llm")]
pub mod llm;

pub use server::TestServer;
