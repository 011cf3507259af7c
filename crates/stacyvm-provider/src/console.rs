//! Console logs that bwrap and microvm keep as files on the host, read from their end.

use std::path::Path;

use crate::ProviderError;

/// The most of a console log's end that [`tail_lines`] reads.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// The last `n` lines of a file, reading at most [`LOG_TAIL_BYTES`]. A serial console's `\r`
/// line ends are dropped with the `\n`.
pub(crate) async fn tail_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in the middle
    }
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}

/// [`Provider::logs`](crate::Provider::logs) from the console log at `path`: one not written
/// yet has no lines.
pub(crate) async fn logs(path: &Path, n: usize) -> Result<Vec<String>, ProviderError> {
    match tail_lines(path, n).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ProviderError::internal_with(
            "reading the console log failed",
            e,
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "console_tests.rs"]
mod tests;
