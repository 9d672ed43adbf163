//! Mirrors dpdk-sys: when it was built without DPDK (`DEP_DPDK_FOUND=0`), this crate and its
//! tests compile to nothing under `cfg(dpdk_missing)`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dpdk_missing)");
    println!("cargo:rerun-if-env-changed=DEP_DPDK_FOUND");
    if std::env::var("DEP_DPDK_FOUND").as_deref() != Ok("1") {
        println!("cargo:rustc-cfg=dpdk_missing");
    }
}
