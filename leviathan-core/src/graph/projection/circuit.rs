//! `circuit.opened` and `circuit.closed`: a target's circuit breaker.

use super::effect::{Effect, Rejection};
use crate::{
    catalogue as cat,
    graph::node::{Circuit, Node},
};

impl Effect<'_, '_> {
    /// Opens the circuit until the time the event names.
    pub(super) fn open_circuit(&mut self, p: &cat::CircuitOpened) -> Result<(), Rejection> {
        let mut target = self.target(&p.target_id, "target_id")?;
        target.circuit = Circuit::Open {
            opened_at: self.at.timestamp,
            until: p.open_until,
            failures: p.consecutive_failures,
        };
        self.touch(&mut target.meta);
        self.put(Node::Target(target));
        Ok(())
    }

    /// Closes an open circuit and forgets the failures that opened it.
    pub(super) fn close_circuit(&mut self, p: &cat::CircuitClosed) -> Result<(), Rejection> {
        let mut target = self.target(&p.target_id, "target_id")?;
        if target.circuit == Circuit::Closed {
            return Err(Rejection::at(
                "target_id",
                format!("the circuit of target `{}` is not open", p.target_id),
            ));
        }
        target.circuit = Circuit::Closed;
        target.consecutive_failures = 0;
        self.touch(&mut target.meta);
        self.put(Node::Target(target));
        Ok(())
    }
}
