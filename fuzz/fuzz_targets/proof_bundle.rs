//! A proof bundle (JSON) accepted by the log's key states a true inclusion.
//! The body is `leviathan_core::testkit::fuzz::proof_bundle`, which the normal test suite also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    leviathan_core::testkit::fuzz::proof_bundle(data);
});
