//! GitHub-shaped REST API and smart-HTTP git server.
