//! Processes untrusted code left behind. Killing a child's process group misses a process that
//! started a session of its own; such a process could wait for the worker's next git push and
//! read that git's environment. The worker is a child subreaper, so every orphan of its tree
//! becomes its child: after each untrusted run, when nothing of the worker's own runs, every
//! descendant left is a stray and is killed.

use std::collections::BTreeMap;

use rustix::process::{Pid, Signal, WaitOptions};

/// Rounds of kill-and-look-again: a stray may fork while it is being killed.
const ROUNDS: usize = 20;

/// Makes this process the reaper of its orphaned descendants (see the module docs).
pub(crate) fn become_subreaper() -> bool {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).is_ok()
}

/// Kills every descendant of this process and collects those that became its children.
pub(crate) fn kill_descendants() {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    for _ in 0..ROUNDS {
        let found = descendants(me);
        if found.is_empty() {
            return;
        }
        for &(pid, _) in &found {
            if let Some(pid) = Pid::from_raw(pid) {
                // Gone already is as good as killed.
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        for &(pid, parent) in &found {
            if parent == me
                && let Some(pid) = Pid::from_raw(pid)
            {
                // Orphans re-parented to this process: reap them (blocking: they were killed).
                let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
            }
        }
        // Strays whose parent was killed are re-parented to this process only now: look again.
        std::thread::yield_now();
    }
}

/// Every live descendant of `root` as `(pid, parent pid)`, from `/proc`.
fn descendants(root: i32) -> Vec<(i32, i32)> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            found.push((child, parent));
            queue.push(child);
        }
    }
    found
}

/// The parent of `pid` from `/proc/<pid>/stat` (`pid (comm) state ppid …`; `comm` may hold
/// spaces and parentheses, so the fields are read after its last `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_this_process_is_read_from_proc() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
        assert_eq!(parent_of(me), Some(parent));
        let children = descendants(parent);
        assert!(children.contains(&(me, parent)), "{children:?}");
    }
}
