//! Replays the pipeline fuzz corpus (`dataplane/fuzz/corpus/pipeline`) on stable: every input
//! that ever mattered to the fuzzer keeps passing the harness's invariants.

#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pipeline");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        dataplane::fuzzing::run_frames(&data);
        count += 1;
    }
    assert!(
        count >= 100,
        "only {count} corpus files in {}",
        dir.display()
    );
}
