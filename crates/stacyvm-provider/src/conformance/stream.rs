//! Streamed file-transfer checks of the provider conformance suite. The first two hold for the
//! trait's buffered defaults too; [`files_stream_large`] needs a real streaming path (memory
//! bounded whatever the file size), which every provider we ship has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, StreamExt};

use super::{with_sandbox, CheckFailure};
use crate::{chunked, collect, Provider, ProviderError, CHUNK_SIZE};

/// Pseudo-random bytes (every value occurs), deterministic per `seed`.
fn noise(len: usize, mut seed: u32) -> Bytes {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed.to_be_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

/// A chunked write of a few MiB (not a multiple of the chunk size) reads back byte for byte,
/// streamed and buffered, with the size announced; an overwrite replaces the file.
pub async fn files_stream_roundtrip(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_stream_roundtrip", p, image, |p, id| async move {
        let data = noise(3 * CHUNK_SIZE * 16 + 12_345, 7);
        let path = "/workspace/up/stream.bin";
        let n = ok!(p
            .write_file_stream(&id, path, chunked(data.clone()), Some("0755"))
            .await);
        ensure!(
            n == data.len() as u64,
            "wrote {n} bytes, want {}",
            data.len()
        );
        let fs = ok!(p.read_file_stream(&id, path).await);
        ensure!(
            fs.size.is_none_or(|s| s == data.len() as u64),
            "announced size {:?}",
            fs.size
        );
        let back = ok!(collect(fs.body).await);
        ensure!(back == data, "streamed read differs ({} bytes)", back.len());
        let buffered = ok!(p.read_file(&id, path).await);
        ensure!(buffered == data, "buffered read differs");
        let st = ok!(p.stat_file(&id, path).await);
        ensure!(st.size == data.len() as i64, "stat size {}", st.size);
        // Overwrite with something shorter, and an empty file.
        ok!(p
            .write_file_stream(&id, path, chunked(Bytes::from_static(b"short")), None)
            .await);
        let back = ok!(collect(ok!(p.read_file_stream(&id, path).await).body).await);
        ensure!(back.as_ref() == b"short", "overwrite: {back:?}");
        let empty = "/workspace/empty.bin";
        ok!(p
            .write_file_stream(&id, empty, stream::empty().boxed(), None)
            .await);
        let fs = ok!(p.read_file_stream(&id, empty).await);
        ensure!(fs.size.is_none_or(|s| s == 0), "empty size {:?}", fs.size);
        ensure!(
            ok!(collect(fs.body).await).is_empty(),
            "empty file not empty"
        );
        Ok(())
    })
    .await
}

/// Missing files and escaping paths fail before any data moves; an upload whose
/// body fails leaves the previous content in place.
pub async fn files_stream_errors(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_stream_errors", p, image, |p, id| async move {
        let inv = |r: &Result<_, ProviderError>| matches!(r, Err(ProviderError::InvalidInput(_)));
        let r = p
            .read_file_stream(&id, "/workspace/missing")
            .await
            .map(drop);
        ensure!(
            matches!(&r, Err(ProviderError::FileNotFound(p)) if p == "/workspace/missing"),
            "missing: {r:?}"
        );
        let r = p.read_file_stream(&id, "../../etc/passwd").await.map(drop);
        ensure!(inv(&r), "read escape: {r:?}");
        let r = p
            .write_file_stream(
                &id,
                "../../tmp/escape.txt",
                chunked(Bytes::from_static(b"x")),
                None,
            )
            .await
            .map(drop);
        ensure!(inv(&r), "write escape: {r:?}");

        let path = "/workspace/keep.txt";
        ok!(p
            .write_file(&id, path, Bytes::from_static(b"old"), None)
            .await);
        let failing = stream::iter(vec![
            Ok(Bytes::from(vec![b'n'; CHUNK_SIZE])),
            Err(ProviderError::InvalidInput("upload interrupted".into())),
        ])
        .boxed();
        let r = p.write_file_stream(&id, path, failing, None).await;
        ensure!(r.is_err(), "failed upload succeeded: {r:?}");
        let back = ok!(p.read_file(&id, path).await);
        ensure!(
            back.as_ref() == b"old",
            "failed upload changed the file: {} bytes",
            back.len()
        );
        // The same when the body fails after a few MiB (past any gathered first piece).
        let failing = stream::iter(
            (0..48)
                .map(|_| Ok(Bytes::from(vec![b'n'; CHUNK_SIZE])))
                .chain([Err(ProviderError::InvalidInput(
                    "upload interrupted".into(),
                ))]),
        )
        .boxed();
        let r = p.write_file_stream(&id, path, failing, None).await;
        ensure!(r.is_err(), "failed large upload succeeded: {r:?}");
        let back = ok!(p.read_file(&id, path).await);
        ensure!(
            back.as_ref() == b"old",
            "failed large upload changed the file"
        );
        // Across a worker the failure reaches the caller before the worker has cleaned up:
        // leftovers must be gone soon, not at once.
        let mut left = Vec::new();
        for _ in 0..50 {
            left = ok!(p.list_files(&id, "/workspace").await);
            if left.len() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        ensure!(
            left.len() == 1 && left[0].path.ends_with("keep.txt"),
            "a failed upload left files behind: {left:?}"
        );
        Ok(())
    })
    .await
}

/// Size of [`files_stream_large`]'s file: far beyond anything a streaming path may hold.
pub const LARGE_FILE: u64 = 128 << 20;
/// [`files_stream_large`]'s file on a provider that buffers.
pub const BUFFERED_FILE: u64 = 8 << 20;

/// The bytes of the large file, generated as they are needed (xorshift, 8 bytes a step).
struct Gen(u64);

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl Gen {
    fn fill(&mut self, out: &mut [u8]) {
        for piece in out.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            piece.copy_from_slice(&self.0.to_le_bytes()[..piece.len()]);
        }
    }
}

/// The large file's bytes in order, for chunks of any length.
struct Expected {
    gen: Gen,
    buf: Vec<u8>,
    /// Bytes of `buf` handed out already.
    used: usize,
}

impl Default for Expected {
    fn default() -> Self {
        Expected {
            gen: Gen(SEED),
            buf: Vec::new(),
            used: 0,
        }
    }
}

impl Expected {
    fn next(&mut self, n: usize) -> &[u8] {
        self.buf.drain(..self.used);
        let have = self.buf.len();
        if have < n {
            // Whole 8-byte steps, so the generator never splits one.
            let more = (n - have).div_ceil(8) * 8;
            self.buf.resize(have + more, 0);
            self.gen.fill(&mut self.buf[have..]);
        }
        self.used = n;
        &self.buf[..n]
    }
}

/// Resident set size of this process, where `/proc` tells it.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The largest RSS seen since `base`, sampled as the transfer goes.
struct Peak {
    base: Option<u64>,
    max: Arc<AtomicU64>,
}

impl Peak {
    fn start() -> Self {
        let base = rss();
        Peak {
            base,
            max: Arc::new(AtomicU64::new(base.unwrap_or(0))),
        }
    }

    fn sample(max: &AtomicU64) {
        if let Some(now) = rss() {
            max.fetch_max(now, Ordering::Relaxed);
        }
    }

    fn growth(&self) -> Option<u64> {
        Some(self.max.load(Ordering::Relaxed).saturating_sub(self.base?))
    }
}

/// `size` bytes, generated chunk by chunk, sampling RSS on the way.
fn large_body(size: u64, peak: Arc<AtomicU64>) -> crate::ByteStream {
    let mut gen = Gen(SEED);
    let mut left = size;
    stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        Peak::sample(&peak);
        let n = left.min(CHUNK_SIZE as u64);
        // CHUNK_SIZE is a multiple of 8, so only the last chunk may end inside a step.
        let mut buf = vec![0u8; n as usize];
        gen.fill(&mut buf);
        left -= n;
        std::task::Poll::Ready(Some(Ok(Bytes::from(buf))))
    })
    .boxed()
}

/// A [`LARGE_FILE`] goes through `write_file_stream` and back through `read_file_stream` byte
/// for byte, and neither direction holds the file in the memory of this process (the control
/// plane or worker in production): the RSS growth stays under a quarter of the file. This is
/// what [`Provider::streams_files`] promises; a provider that says it buffers (a remote worker
/// without the streaming RPC) is held to byte-exactness on [`BUFFERED_FILE`] bytes only, since
/// its callers cap what it is given.
pub async fn files_stream_large(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let size = if p.streams_files() {
        LARGE_FILE
    } else {
        BUFFERED_FILE
    };
    files_stream_large_sized(p, image, size).await
}

/// [`files_stream_large`] with a file of `size` bytes (at least a few MiB, so the memory
/// bound means something), for backends too slow to move [`LARGE_FILE`] in a test's time
/// (microvm under TCG).
pub async fn files_stream_large_sized(
    p: &dyn Provider,
    image: &str,
    size: u64,
) -> Result<(), CheckFailure> {
    with_sandbox("files_stream_large", p, image, |p, id| async move {
        let path = "/workspace/large.bin";
        let peak = Peak::start();
        let n = ok!(p
            .write_file_stream(&id, path, large_body(size, peak.max.clone()), None)
            .await);
        ensure!(n == size, "wrote {n} bytes, want {size}");
        let up = peak.growth();

        let peak = Peak::start();
        let mut fs = ok!(p.read_file_stream(&id, path).await);
        ensure!(
            fs.size.is_none_or(|s| s == size),
            "announced size {:?}",
            fs.size
        );
        let mut want = Expected::default();
        let mut got = 0u64;
        while let Some(chunk) = fs.body.next().await {
            Peak::sample(&peak.max);
            let chunk = ok!(chunk);
            ensure!(
                chunk[..] == *want.next(chunk.len()),
                "read differs in the chunk at byte {got}"
            );
            got += chunk.len() as u64;
            ensure!(got <= size, "read more than {size} bytes");
        }
        ensure!(got == size, "read {got} bytes, want {size}");
        let down = peak.growth();
        ok!(p.delete_file(&id, path, false).await);
        for (dir, growth) in [("write", up), ("read", down)] {
            if let Some(g) = growth.filter(|_| p.streams_files()) {
                ensure!(
                    g < size / 4,
                    "{dir} of {size} bytes grew RSS by {g} bytes (limit {})",
                    size / 4
                );
            }
        }
        Ok(())
    })
    .await
}
