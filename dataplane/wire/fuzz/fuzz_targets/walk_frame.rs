//! Feeds arbitrary bytes to `wire::fuzzing::walk_frame`, which dissects them as an Ethernet
//! frame and runs every packet view on them. Any panic is a parser bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wire::fuzzing::walk_frame(data);
});
