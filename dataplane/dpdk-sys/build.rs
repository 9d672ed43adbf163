//! Finds DPDK with pkg-config, generates bindings with bindgen, compiles the C shim and links
//! DPDK's shared libraries.
//!
//! Shared linkage is deliberate: a shared EAL loads every poll-mode driver from its plugin
//! directory (`RTE_EAL_PMD_PATH`, on Debian 12 `/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0`), so
//! `--vdev=net_ring0`, `net_null`, `net_pcap`, `net_af_packet` and the NIC drivers are available
//! without linking each one.
//!
//! When libdpdk (or libclang, which bindgen needs) is not installed, the crate builds empty with
//! `cfg(dpdk_missing)` and a `cargo:warning`, so `cargo build --workspace` works on any machine.
//! Set `DPDK_SYS_REQUIRE=1` to turn that into a build error (CI does, so a broken install cannot
//! silently skip the DPDK tests). Dependents read `DEP_DPDK_FOUND` (`1` or `0`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The DPDK release the bindings and shim are written against (Debian 12 ships 22.11 LTS).
const MIN_VERSION: &str = "22.11";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dpdk_missing)");
    println!("cargo:rerun-if-env-changed=DPDK_SYS_REQUIRE");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/bindings.h");

    let required = env::var("DPDK_SYS_REQUIRE").is_ok_and(|v| v == "1");
    match build() {
        Ok(()) => println!("cargo:found=1"),
        Err(why) if required => {
            panic!("dpdk-sys: DPDK_SYS_REQUIRE=1 but {why}");
        }
        Err(why) => {
            println!(
                "cargo:warning=dpdk-sys: {why}; building without DPDK (the `dpdk` crate is empty). \
                 Install it with: apt-get install dpdk dpdk-dev libdpdk-dev libclang-dev pkg-config"
            );
            println!("cargo:rustc-cfg=dpdk_missing");
            println!("cargo:found=0");
        }
    }
}

fn build() -> Result<(), String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let run = |args: &[&str]| -> Result<String, String> {
        let out = Command::new(&pkg_config)
            .args(args)
            .arg("libdpdk")
            .output()
            .map_err(|e| format!("cannot run {pkg_config}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`{pkg_config} {} libdpdk` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let version = run(&["--modversion"])?;
    run(&[&format!("--atleast-version={MIN_VERSION}")])
        .map_err(|_| format!("libdpdk {version} is older than {MIN_VERSION}"))?;
    let cflags: Vec<String> = split_flags(&run(&["--cflags"])?);
    let libs: Vec<String> = split_flags(&run(&["--libs"])?);
    let libdir = run(&["--variable=libdir"])?;

    // Bindings first: this is the step that needs libclang, and it must fail before we emit any
    // link flags. bindgen panics when libclang cannot be loaded, hence catch_unwind.
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let bindings = std::panic::catch_unwind(|| generate_bindings(&cflags))
        .map_err(|_| "bindgen panicked (is libclang-dev installed?)".to_string())??;
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .map_err(|e| format!("cannot write bindings: {e}"))?;

    let mut shim = cc::Build::new();
    shim.file("shim/shim.c")
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter");
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.try_compile("vipd_dpdk_shim")
        .map_err(|e| format!("cannot compile the C shim: {e}"))?;

    for flag in &libs {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        // Other flags (-Wl,--as-needed) are what rustc passes for dylibs anyway.
    }
    // The vdev bus (rte_vdev_init) and the ring PMD (rte_eth_from_rings) are drivers, not in
    // `--libs`; link them directly (the EAL recognises them when it later scans its plugin dir).
    println!("cargo:rustc-link-search=native={libdir}");
    for driver in ["rte_bus_vdev", "rte_net_ring"] {
        if !PathBuf::from(&libdir)
            .join(format!("lib{driver}.so"))
            .exists()
        {
            return Err(format!("lib{driver}.so is missing from {libdir}"));
        }
        println!("cargo:rustc-link-lib=dylib={driver}");
    }
    println!("cargo:version={version}");
    Ok(())
}

fn split_flags(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn generate_bindings(cflags: &[String]) -> Result<bindgen::Bindings, String> {
    bindgen::Builder::default()
        .header("shim/bindings.h")
        .clang_args(cflags)
        .allowlist_function(
            "rte_eal_.*|rte_eth_.*|rte_pktmbuf_.*|rte_mempool_.*|rte_lcore_.*|rte_strerror\
             |rte_ring_create|rte_ring_free|rte_vdev_init|rte_vdev_uninit|rte_socket_id\
             |rte_get_main_lcore|rte_get_next_lcore|rte_thread_register|rte_thread_unregister\
             |shim_.*",
        )
        .allowlist_type("rte_eth_.*|rte_mbuf|rte_ether_addr|rte_mempool|rte_ring")
        .allowlist_var("RTE_ETH_.*|RTE_PKTMBUF_HEADROOM|RTE_MBUF_DEFAULT_.*|RTE_MAX_ETHPORTS|RTE_MAX_LCORE|SOCKET_ID_ANY|RTE_ETHER_.*|RING_F_.*")
        // Static-inline functions have no symbol to link; the shim exports the ones we need.
        .generate_inline_functions(false)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .map_err(|e| format!("bindgen failed: {e}"))
}
