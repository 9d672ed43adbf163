//! `Eal::init` turns bad arguments into clear errors instead of crashing, and refuses to call
//! `rte_eal_init` a second time in the process (DPDK cannot retry after a failure).
#![cfg(not(dpdk_missing))]

mod common;

use dpdk::{DpdkError, Eal};

#[test]
fn bad_eal_arguments_are_errors() {
    // Rejected before DPDK sees it, so it does not use up the process's one init.
    let err = Eal::init(&["bad\0arg"]).expect_err("NUL byte");
    assert!(matches!(err, DpdkError::NulInArgument { .. }), "{err}");

    let args = common::eal_args("errors", &["--definitely-not-an-eal-option"]);
    let err = Eal::init(&common::as_strs(&args)).expect_err("unknown option");
    common::remove_runtime_dir(&args);
    match &err {
        DpdkError::EalInit { errno, hint, .. } => {
            assert_eq!(*errno, 22, "EINVAL: {err}");
            assert!(hint.contains("argument"), "{err}");
        }
        other => panic!("expected EalInit, got {other:?}"),
    }

    // DPDK keeps half-parsed options after a failure; a retry is refused without calling it.
    let args = common::eal_args("errors", &[]);
    let err = Eal::init(&common::as_strs(&args)).expect_err("second init in one process");
    assert!(matches!(err, DpdkError::AlreadyInitialized), "{err}");
    assert!(err.to_string().contains("new process"), "{err}");
}
