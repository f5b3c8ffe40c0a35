//! The end of a process's output, within a memory bound.

/// Keeps the last `capacity` bytes pushed into it: a child process's log is read whole into
/// memory, and a runaway child must not take the reader down with it.
#[derive(Clone, Debug)]
pub struct OutputTail {
    bytes: Vec<u8>,
    capacity: usize,
    truncated: bool,
}

impl OutputTail {
    /// An empty tail keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: Vec::new(),
            capacity,
            truncated: false,
        }
    }

    /// Appends `chunk`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > self.capacity {
            let excess = self.bytes.len() - self.capacity;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    /// The kept bytes, and whether older ones were dropped.
    pub fn into_parts(self) -> (Vec<u8>, bool) {
        (self.bytes, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::OutputTail;

    #[test]
    fn keeps_the_end() {
        let mut out = OutputTail::new(8);
        out.push(b"aaaaaaaa");
        let mut copy = out.clone();
        copy.push(b"");
        assert_eq!(copy.into_parts(), (b"aaaaaaaa".to_vec(), false));
        out.push(b"tail");
        assert_eq!(out.into_parts(), (b"aaaatail".to_vec(), true));
    }
}
