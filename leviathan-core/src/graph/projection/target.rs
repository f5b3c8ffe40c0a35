//! `target.registered` and `target.updated`.

use super::effect::{Effect, Rejection};
use crate::{
    catalogue as cat,
    graph::node::{Circuit, Node, NodeId, TargetNode},
};

impl Effect<'_, '_> {
    /// A new target, with a closed circuit and nothing running.
    pub(super) fn register_target(&mut self, p: &cat::TargetRegistered) -> Result<(), Rejection> {
        if self.current(&NodeId::target(&p.target_id)).is_some() {
            return Err(Rejection::at(
                "target_id",
                format!(
                    "target `{}` is already registered; use target.updated",
                    p.target_id
                ),
            ));
        }
        let node = TargetNode {
            target_id: p.target_id.clone(),
            name: p.name.clone(),
            repo_url: p.repo_url.clone(),
            default_branch: p.default_branch.clone(),
            test_command: p.test_command.clone(),
            circuit: Circuit::Closed,
            consecutive_failures: 0,
            open_prs: 0,
            live_attempts: 0,
            meta: self.new_meta(),
        };
        self.put(Node::Target(node));
        Ok(())
    }

    /// Changes the fields the event carries, keeps the others.
    pub(super) fn update_target(&mut self, p: &cat::TargetUpdated) -> Result<(), Rejection> {
        let mut target = self.target(&p.target_id, "target_id")?;
        if let Some(name) = &p.name {
            target.name = Some(name.clone());
        }
        if let Some(url) = &p.repo_url {
            target.repo_url = url.clone();
        }
        if let Some(branch) = &p.default_branch {
            target.default_branch = branch.clone();
        }
        if let Some(cmd) = &p.test_command {
            target.test_command = Some(cmd.clone());
        }
        self.touch(&mut target.meta);
        self.put(Node::Target(target));
        Ok(())
    }
}
