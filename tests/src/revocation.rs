//! [`RevocationFile`]: the broker's `revocation_file`, owned by a test that
//! can add lines to it while the broker runs.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A revocation file in its own temporary directory. Every change replaces the
/// file atomically (write, then rename), so the broker never reads half a list.
pub struct RevocationFile {
    dir: TempDir,
    lines: Vec<String>,
}

impl RevocationFile {
    /// A file holding only a comment line.
    #[must_use]
    pub fn new() -> Self {
        let dir = TempDir::new().expect("creating a temporary directory");
        let mut file = Self { dir, lines: vec!["# revoked tokens, one jti or token per line".to_owned()] };
        file.write();
        file
    }

    /// The file's path, for `Config::revocation_file`.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("revoked.txt")
    }

    /// Appends a `jti` or a whole token and rewrites the file.
    pub fn revoke(&mut self, line: &str) {
        self.lines.push(line.to_owned());
        self.write();
    }

    fn write(&mut self) {
        let staging = self.dir.path().join("revoked.txt.new");
        let mut text = self.lines.join("\n");
        text.push('\n');
        std::fs::write(&staging, text).expect("writing the revocation list");
        std::fs::rename(&staging, self.path()).expect("replacing the revocation list");
    }

    /// The directory holding the file.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for RevocationFile {
    fn default() -> Self {
        Self::new()
    }
}
