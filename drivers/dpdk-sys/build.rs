//! Finds the system's libdpdk with pkg-config, generates bindings for what
//! Sluice uses (bindgen over `wrapper.h`), and compiles `shim.c`, which
//! exports DPDK's inline functions (the burst calls, mbuf alloc/free) as
//! real symbols.
//!
//! DPDK's headers need the compiler flags of its pkg-config file (for
//! 22.11 on Debian: `-include rte_config.h -march=corei7` and the include
//! directories); both bindgen and the C compiler get all of them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The oldest libdpdk whose API this crate is written against.
const MIN_VERSION: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            // One clear line first; pkg-config's own explanation after it.
            eprintln!(
                "error: libdpdk >= {MIN_VERSION} not found by pkg-config: install Debian's `libdpdk-dev` \
                 (apt-get install libdpdk-dev), or build without the `dpdk` feature of sluice-drivers\n\n{e}"
            );
            std::process::exit(1);
        }
    };

    // Every compile flag of libdpdk.pc: include paths, defines, and the
    // `-include rte_config.h` / `-march=...` DPDK's headers rely on.
    let cflags = raw_cflags();

    let mut cc = cc::Build::new();
    cc.file("shim.c").include(".").opt_level(2).warnings(true);
    for f in &cflags {
        cc.flag(f);
    }
    cc.compile("sluice_dpdk_shim");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-I.")
        .clang_args(&cflags)
        .clang_args(
            lib.include_paths
                .iter()
                .map(|p| format!("-I{}", p.display())),
        )
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        // Functions Sluice calls.
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_eal_process_type")
        .allowlist_function("rte_dev_probe")
        .allowlist_function("rte_dev_remove")
        .allowlist_function("rte_eal_hotplug_remove")
        .allowlist_function("rte_eth_dev_.*")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_stats_get")
        .allowlist_function("rte_eth_stats_reset")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_link_get_nowait")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_lcore_count")
        .allowlist_function("sluice_.*")
        // Types and constants.
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_mempool")
        .allowlist_type("rte_eth_conf")
        .allowlist_type("rte_eth_dev_info")
        .allowlist_type("rte_eth_stats")
        .allowlist_type("rte_eth_rxconf")
        .allowlist_type("rte_eth_txconf")
        .allowlist_type("rte_eth_link")
        .allowlist_type("rte_ether_addr")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_MAX_LCORE")
        .allowlist_var("RTE_ETH_NAME_MAX_LEN")
        .allowlist_var("RTE_ETHDEV_QUEUE_STAT_CNTRS")
        .allowlist_var("RTE_MEMPOOL_CACHE_MAX_SIZE")
        .allowlist_var("RTE_MBUF_DEFAULT_DATAROOM")
        .allowlist_var("RTE_MBUF_PRIV_ALIGN")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("LCORE_ID_ANY")
        // Inline functions have no symbol in the shared library; the shim
        // exports the ones Sluice needs under `sluice_` names.
        .generate_inline_functions(false)
        .derive_default(true)
        // DPDK's doc comments are C, not rustdoc (their code would run as doctests).
        .generate_comments(false)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("error: bindgen could not process DPDK's headers (wrapper.h): {e}");
            std::process::exit(1);
        });
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs to OUT_DIR");
}

/// `pkg-config --cflags libdpdk`, split into arguments (the pkg-config
/// crate keeps include paths and defines but drops `-include` and
/// `-march`).
fn raw_cflags() -> Vec<String> {
    let pc = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&pc)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| {
            eprintln!("error: cannot run {pc} --cflags libdpdk: {e}");
            std::process::exit(1);
        });
    if !out.status.success() {
        eprintln!(
            "error: {pc} --cflags libdpdk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::process::exit(1);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut args = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            // Keep `-include FILE` together, as one bindgen/cc argument
            // each (both accept the pair as two arguments).
            if let Some(file) = words.next() {
                args.push(w.to_string());
                args.push(file.to_string());
            }
        } else {
            args.push(w.to_string());
        }
    }
    args
}
