//! Feeds arbitrary UPDATE bodies to `bgp::fuzzing::update_decode`: RFC 7606 judgement, the
//! re-encode round trip and an Established session. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bgp::fuzzing::update_decode(data);
});
