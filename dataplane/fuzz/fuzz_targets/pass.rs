//! cargo-fuzz target `pass`: malformed and mutated frames through the PASS
//! path into the host stack (see `src/harness.rs`).
//!
//!     cd dataplane/fuzz && cargo +nightly fuzz run pass -- -max_total_time=60
//!
//! A crash found here goes into `regressions/` (the artifact file as it
//! is), where `dataplane/tests/host_fuzz_regressions.rs` replays it on
//! stable with every test run.

#![no_main]

#[path = "../src/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
