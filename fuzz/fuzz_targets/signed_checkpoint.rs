//! Signed notes and cosignatures: only the log's own checkpoints verify.
//! The body is `leviathan_core::testkit::fuzz::signed_checkpoint`, which the normal test suite also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    leviathan_core::testkit::fuzz::signed_checkpoint(data);
});
