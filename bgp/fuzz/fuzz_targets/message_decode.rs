//! Feeds arbitrary bytes to `bgp::fuzzing::message_decode`: the message decoder, the re-encode
//! round trip, UPDATE judgement and an Established session. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bgp::fuzzing::message_decode(data);
});
