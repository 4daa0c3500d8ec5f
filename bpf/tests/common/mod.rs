//! Helpers shared by the integration tests.

use std::path::PathBuf;

pub mod kernel;
pub mod packets;

/// Where `shared/` is: `$SLUICE_SHARED`, else beside the checkout (CI clones
/// the repository next to `shared/`), else `/work/shared`.
pub fn shared_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_SHARED") {
        return PathBuf::from(p);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if beside.exists() {
        return beside;
    }
    PathBuf::from("/work/shared")
}
