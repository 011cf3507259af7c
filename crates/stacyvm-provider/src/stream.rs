//! Streaming file transfer: the types [`Provider::read_file_stream`] and
//! [`Provider::write_file_stream`] exchange, and the buffered fallbacks their default
//! implementations use. Streams move data in chunks of about [`CHUNK_SIZE`], so a transfer of
//! any size holds a few chunks in memory, not the file.
//!
//! [`Provider::read_file_stream`]: crate::Provider::read_file_stream
//! [`Provider::write_file_stream`]: crate::Provider::write_file_stream

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;

use crate::ProviderError;

/// Size of the chunks backends read and write (large enough to keep syscalls and frames few,
/// small enough that a handful in flight stay well under a MiB).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// File content as a stream of chunks. An `Err` item ends the transfer: for a download the
/// caller must treat the data it got as incomplete; for an upload the provider discards it.
pub type ByteStream = BoxStream<'static, Result<Bytes, ProviderError>>;

/// A file being read: its size when the backend knows it up front, and its content.
pub struct FileStream {
    pub size: Option<u64>,
    pub body: ByteStream,
}

impl FileStream {
    /// A stream of one already buffered chunk (the fallback for backends without streaming).
    pub fn from_bytes(b: Bytes) -> Self {
        FileStream {
            size: Some(b.len() as u64),
            body: stream::once(async move { Ok(b) }).boxed(),
        }
    }
}

impl fmt::Debug for FileStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStream")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Gathers a whole stream (for backends that only write from memory).
pub async fn collect(mut body: ByteStream) -> Result<Bytes, ProviderError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.freeze())
}

/// Passes `body` through until more than `max` bytes went by, then ends it with an
/// `InvalidInput` error and sets `tripped` (so the caller can tell this limit from other
/// failures). For uploads to backends that buffer them whole.
pub fn limited(body: ByteStream, max: u64, tripped: Arc<AtomicBool>) -> ByteStream {
    let mut seen = 0u64;
    body.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > max {
            tripped.store(true, Ordering::SeqCst);
            return Err(ProviderError::InvalidInput(format!(
                "file larger than {max} bytes"
            )));
        }
        Ok(chunk)
    })
    .boxed()
}

/// Splits `data` into [`CHUNK_SIZE`] pieces as a stream (tests and benchmarks).
pub fn chunked(data: Bytes) -> ByteStream {
    let pieces: Vec<Result<Bytes, ProviderError>> = (0..data.len())
        .step_by(CHUNK_SIZE)
        .map(|i| Ok(data.slice(i..(i + CHUNK_SIZE).min(data.len()))))
        .collect();
    stream::iter(pieces).boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunked_then_collected_is_identity() {
        let data: Bytes = (0..(3 * CHUNK_SIZE + 17))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let s = chunked(data.clone());
        assert_eq!(collect(s).await.unwrap(), data);
        let fs = FileStream::from_bytes(data.clone());
        assert_eq!(fs.size, Some(data.len() as u64));
        assert_eq!(collect(fs.body).await.unwrap(), data);
    }

    #[tokio::test]
    async fn limited_stops_past_the_limit_only() {
        let data = Bytes::from(vec![1u8; 3 * CHUNK_SIZE]);
        let tripped = Arc::new(AtomicBool::new(false));
        let exact = limited(chunked(data.clone()), data.len() as u64, tripped.clone());
        assert_eq!(collect(exact).await.unwrap(), data);
        assert!(!tripped.load(Ordering::SeqCst));
        let over = limited(
            chunked(data.clone()),
            data.len() as u64 - 1,
            tripped.clone(),
        );
        assert!(matches!(
            collect(over).await,
            Err(ProviderError::InvalidInput(_))
        ));
        assert!(tripped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_error_item_fails_the_collection() {
        let s = stream::iter(vec![
            Ok(Bytes::from_static(b"a")),
            Err(ProviderError::InvalidInput("upload interrupted".into())),
        ])
        .boxed();
        assert!(matches!(
            collect(s).await,
            Err(ProviderError::InvalidInput(_))
        ));
    }
}
