//! Feeds arbitrary bytes to the pipeline as frames (see `dataplane::fuzzing`). Any panic is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::run_frames(data);
});
