//! A `--vdev` no installed PMD provides fails `Eal::init` with an error that points at the plugin
//! directory, not a crash.
#![cfg(not(dpdk_missing))]

mod common;

use dpdk::{DpdkError, Eal};

#[test]
fn unknown_vdev_is_an_error_naming_the_plugin_dir() {
    let args = common::eal_args("missing-pmd", &["--vdev=net_nonexistent0"]);
    let err = Eal::init(&common::as_strs(&args)).expect_err("no such PMD");
    common::remove_runtime_dir(&args);
    assert!(matches!(err, DpdkError::EalInit { .. }), "{err}");
    assert!(err.to_string().contains("pmds-23.0"), "{err}");
}
