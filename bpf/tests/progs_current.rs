//! The committed test objects (`tests/progs/*.o`) are exactly what
//! `tests/progs/build.sh` makes from the committed sources, so the kernel
//! differential test never runs a stale program.
//!
//! The check rebuilds every program into a temporary directory with the
//! same script and compares bytes. It needs the compiler that built the
//! committed objects (`tests/progs/CLANG_VERSION`): another clang version
//! makes other, equally valid bytes, so then the check is skipped loudly,
//! as it is when there is no clang at all. `$CLANG` names another binary.

// `common` is shared by several test crates; this one uses a part of it.
#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::kernel::ScratchDir;

fn progs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/progs")
}

fn skipped(reason: &str) {
    eprintln!();
    eprintln!("**************************************************************");
    eprintln!("SKIPPED: {reason}");
    eprintln!("**************************************************************");
    eprintln!();
}

/// The file stems in `dir` with extension `ext`, sorted.
fn stems(dir: &Path, ext: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
        .collect()
}

#[test]
fn committed_objects_match_sources() {
    let dir = progs_dir();
    let sources = stems(&dir, "c");
    let objects = stems(&dir, "o");
    assert!(!sources.is_empty(), "no test programs in {}", dir.display());
    assert_eq!(
        sources, objects,
        "every tests/progs/X.c needs a committed X.o and vice versa (run tests/progs/build.sh)"
    );

    let clang = std::env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let version = match Command::new(&clang).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        _ => {
            skipped("clang not found — committed objects not checked");
            return;
        }
    };
    let recorded = fs::read_to_string(dir.join("CLANG_VERSION"))
        .expect("tests/progs/CLANG_VERSION records the compiler of the committed objects");
    if version != recorded.trim() {
        skipped(&format!(
            "{version:?} is not the compiler of the committed objects ({:?}) — \
             committed objects not checked",
            recorded.trim()
        ));
        return;
    }

    let out = ScratchDir::create("progs").expect("temporary directory");
    let status = Command::new("sh")
        .arg(dir.join("build.sh"))
        .arg(out.path())
        .env("CLANG", &clang)
        .status()
        .expect("run tests/progs/build.sh");
    assert!(status.success(), "tests/progs/build.sh failed: {status}");

    let stale: Vec<String> = sources
        .iter()
        .filter(|name| {
            let committed = fs::read(dir.join(format!("{name}.o"))).expect("committed object");
            let rebuilt = fs::read(out.path().join(format!("{name}.o"))).expect("rebuilt object");
            committed != rebuilt
        })
        .map(|name| format!("{name}.o"))
        .collect();
    assert!(
        stale.is_empty(),
        "committed objects differ from their sources: {stale:?}; run tests/progs/build.sh \
         and commit the objects"
    );
    println!("{} committed objects match their sources", sources.len());
}
