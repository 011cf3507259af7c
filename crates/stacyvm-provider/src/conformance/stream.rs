//! Streamed file-transfer checks of the provider conformance suite. Backends without their own
//! streaming path pass through the trait's buffered defaults, so these hold for every backend.

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
        Ok(())
    })
    .await
}
