//! Replays the checked-in fuzz corpora through `bgp::fuzzing` on stable Rust.
//!
//! The corpora (`fuzz/corpus/{message_decode,update_decode}/`) are the minimised output of the
//! cargo-fuzz targets of the same names plus handcrafted seeds (`seed_*`, written by
//! `fuzz/seeds/make_seeds.py`); see `fuzz/README.md`. A panic here is a bug the fuzzer found
//! (or a regression of one).

use std::fs;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fuzz corpus {}: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = fs::read(&path).unwrap();
            run(&data);
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn replay_message_decode_corpus() {
    let n = replay("message_decode", bgp::fuzzing::message_decode);
    assert!(n >= 30, "expected at least 30 corpus files, found {n}");
}

#[test]
fn replay_update_decode_corpus() {
    let n = replay("update_decode", bgp::fuzzing::update_decode);
    assert!(n >= 16, "expected at least 16 corpus files, found {n}");
}

#[test]
fn seeds_mean_what_their_names_say() {
    // The handcrafted seeds must stay meaningful: decode them with the crate's codec.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/message_decode");
    let open = fs::read(dir.join("seed_open_full_caps")).unwrap();
    let (msg, used) = bgp::decode(&open).unwrap().unwrap();
    assert_eq!(used, open.len());
    let bgp::Message::Open(open) = msg else {
        panic!("not an OPEN");
    };
    assert_eq!(open.peer_as(), 65002);
    let update = fs::read(dir.join("seed_update_v4_announce_4octet")).unwrap();
    let (msg, _) = bgp::decode(&update).unwrap().unwrap();
    let bgp::Message::Update(u) = msg else {
        panic!("not an UPDATE");
    };
    let parsed = bgp::parse_update(&u, true).unwrap();
    assert_eq!(parsed.announced().len(), 1);
    assert!(parsed.errors.is_empty());
    let bad = fs::read(dir.join("seed_bad_marker")).unwrap();
    let e = bgp::decode(&bad).unwrap_err();
    assert_eq!(e.notification().code, 1);
}
