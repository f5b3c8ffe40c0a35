//! Consistency proofs verify only against the log's true roots.
//! The body is `leviathan_core::testkit::fuzz::consistency`, which the normal test suite also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    leviathan_core::testkit::fuzz::consistency(data);
});
