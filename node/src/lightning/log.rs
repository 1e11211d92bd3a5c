//! ldk-node's log file, written through one open handle.
//!
//! ldk-node's own file logger opens `ldk_node.log`, appends one line and closes it again for
//! every line (LDK logs many a payment, some under its channel locks), panics the whole node when
//! the file cannot be opened or written (a full disk, a removed directory), and lets the file grow
//! without end. [`LdkFileLog`] writes the same lines, at the same level, to the same file, but
//! keeps the file open, reports a failing write once in the node's own log instead of panicking,
//! and starts a new file once the current one reaches [`MAX_LOG_BYTES`] (keeping the previous
//! one as `ldk_node.log.1`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ldk_node::logger::{LogLevel, LogRecord, LogWriter};

/// The log's file name in ldk-node's storage directory (ldk-node's own default).
pub const LOG_FILE_NAME: &str = "ldk_node.log";

/// Size at which the log starts a new file (the previous one is kept as `ldk_node.log.1`).
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// The lowest level written (ldk-node's default: `Trace` and `Gossip` are left out).
pub const LOG_LEVEL: LogLevel = LogLevel::Debug;

struct Open {
    file: Option<File>,
    written: u64,
    /// The last write failed (reported once, until a write succeeds again).
    failing: bool,
}

/// ldk-node's log file through one open handle (see the module documentation).
pub struct LdkFileLog {
    path: PathBuf,
    max_bytes: u64,
    open: Mutex<Open>,
}

fn lock(m: &Mutex<Open>) -> MutexGuard<'_, Open> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

impl LdkFileLog {
    /// Opens (or creates) `ldk_node.log` in `dir`, creating `dir`.
    ///
    /// # Errors
    /// The I/O error when the directory or the file cannot be created or opened.
    pub fn open(dir: &Path) -> std::io::Result<LdkFileLog> {
        Self::with_limit(dir, MAX_LOG_BYTES)
    }

    fn with_limit(dir: &Path, max_bytes: u64) -> std::io::Result<LdkFileLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        let (file, written) = open_append(&path)?;
        Ok(LdkFileLog {
            path,
            max_bytes,
            open: Mutex::new(Open { file: Some(file), written, failing: false }),
        })
    }

    /// Moves a full log to `ldk_node.log.1` and opens a new one.
    fn rotate(&self, open: &mut Open) -> std::io::Result<()> {
        open.file = None;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, PathBuf::from(old))?;
        let (file, written) = open_append(&self.path)?;
        open.file = Some(file);
        open.written = written;
        Ok(())
    }

    fn write_line(&self, open: &mut Open, line: &[u8]) -> std::io::Result<()> {
        if open.file.is_none() {
            // Lost to an earlier error (or a rotation that failed): opened again.
            let (file, written) = open_append(&self.path)?;
            open.file = Some(file);
            open.written = written;
        } else if open.written >= self.max_bytes {
            self.rotate(open)?;
        }
        let file = open.file.as_mut().ok_or_else(|| std::io::Error::other("no log file"))?;
        file.write_all(line)?;
        open.written = open.written.saturating_add(line.len() as u64);
        Ok(())
    }
}

impl LogWriter for LdkFileLog {
    fn log<'a>(&self, record: LogRecord<'a>) {
        if record.level < LOG_LEVEL {
            return;
        }
        let line = format!(
            "{} {:<5} [{}:{}] {}\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f"),
            record.level.to_string(),
            record.module_path,
            record.line,
            record.args
        );
        let mut open = lock(&self.open);
        match self.write_line(&mut open, line.as_bytes()) {
            Ok(()) => open.failing = false,
            Err(e) => {
                if !open.failing {
                    open.failing = true;
                    // The Lightning node goes on; its log lines are lost until a write succeeds.
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write ldk-node's log");
                }
                // Reopened at the next line.
                open.file = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn record(log: &LdkFileLog, level: LogLevel, text: &str) {
        log.log(LogRecord {
            level,
            args: format_args!("{text}"),
            module_path: "lightning::ln::channel",
            line: 7,
        });
    }

    #[test]
    fn writes_ldk_nodes_lines_at_debug_and_above() {
        let dir = tempfile::tempdir().unwrap();
        let log = LdkFileLog::open(dir.path()).unwrap();
        record(&log, LogLevel::Trace, "not kept");
        record(&log, LogLevel::Debug, "kept");
        record(&log, LogLevel::Error, "also kept");
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE_NAME)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(" DEBUG [lightning::ln::channel:7] kept"), "{}", lines[0]);
        assert!(lines[1].contains(" ERROR [lightning::ln::channel:7] also kept"));
    }

    #[test]
    fn a_full_log_starts_a_new_file_and_keeps_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = LdkFileLog::with_limit(dir.path(), 200).unwrap();
        for n in 0..10 {
            record(&log, LogLevel::Info, &format!("line {n}"));
        }
        let current = std::fs::metadata(dir.path().join(LOG_FILE_NAME)).unwrap().len();
        let previous = std::fs::read_to_string(dir.path().join("ldk_node.log.1")).unwrap();
        assert!(current < 200 + 100, "the current file stays near the limit: {current}");
        assert!(!previous.is_empty());
        let all = previous + &std::fs::read_to_string(dir.path().join(LOG_FILE_NAME)).unwrap();
        assert!(all.contains("line 9"));
    }

    #[test]
    fn a_log_that_cannot_be_written_does_not_panic_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let log = LdkFileLog::open(dir.path()).unwrap();
        // The directory goes away: the write fails, quietly.
        std::fs::remove_dir_all(dir.path()).unwrap();
        {
            // Force a reopen (the open handle would still write to the unlinked file).
            lock(&log.open).file = None;
        }
        record(&log, LogLevel::Error, "lost");
        assert!(lock(&log.open).failing);
        // It comes back: the next line reopens the file.
        std::fs::create_dir_all(dir.path()).unwrap();
        record(&log, LogLevel::Error, "back");
        assert!(!lock(&log.open).failing);
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE_NAME)).unwrap();
        assert!(text.contains("back") && !text.contains("lost"));
    }
}
