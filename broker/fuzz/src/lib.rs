//! Structured inputs for the broker's fuzz targets, and the code that feeds
//! them through the broker (shared with the broker's regression test).

pub mod chat;
pub mod feed;
pub mod head;
pub mod json;
pub mod packet;
pub mod token;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Writes `rendered` to `$BROKER_FUZZ_SAVE/<target>/<hash>` when that
/// variable is set: run a crash or corpus file with it to get the input the
/// broker saw, the form the regression corpus keeps.
pub fn save_rendered(target: &str, rendered: &[u8]) {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(dir) = DIR.get_or_init(|| std::env::var_os("BROKER_FUZZ_SAVE").map(PathBuf::from)) else {
        return;
    };
    let dir = dir.join(target);
    let _ = std::fs::create_dir_all(&dir);
    let hash = rendered.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let _ = std::fs::write(dir.join(format!("{hash:016x}")), rendered);
}
