//! `gzship verify`: stream the object back, decompress every member, and compare length and
//! CRC-32 (and SHA-256 on request) with the source read over SFTP.

use std::io::Write;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use gzship_core::gunzip::Gunzip;
use gzship_core::source::{ByteStream, Source};
use gzship_core::store::ObjectStore;
use gzship_core::{ByteRange, ObjectUrl, SourceUrl};

/// What both sides hashed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest32 {
    /// Bytes seen.
    pub bytes: u64,
    /// CRC-32 of the bytes.
    pub crc32: u32,
    /// SHA-256 (hex), when asked for.
    pub sha256: Option<String>,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The source.
    pub source: String,
    /// The object.
    pub destination: String,
    /// Size of the compressed object.
    pub object_bytes: u64,
    /// The source's digest.
    pub expected: Digest32,
    /// The decompressed object's digest.
    pub actual: Digest32,
    /// The CRC-32 recorded in the object's `gzship-crc32` tag when it was shipped, if any.
    pub recorded_crc32: Option<u32>,
    /// Whether they match.
    pub ok: bool,
}

/// Hashes bytes as they are written.
struct Hasher {
    bytes: u64,
    crc: crc32fast::Hasher,
    sha: Option<Sha256>,
}

impl Hasher {
    fn new(sha: bool) -> Self {
        Hasher {
            bytes: 0,
            crc: crc32fast::Hasher::new(),
            sha: sha.then(Sha256::new),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.crc.update(data);
        if let Some(s) = &mut self.sha {
            s.update(data);
        }
    }

    fn finish(self) -> Digest32 {
        Digest32 {
            bytes: self.bytes,
            crc32: self.crc.finalize(),
            sha256: self.sha.map(|s| hex::encode(s.finalize())),
        }
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the source and the object concurrently and compares them.
pub async fn verify<S: Source, M: ObjectStore>(
    source: &S,
    source_url: &SourceUrl,
    store: &M,
    dest: &ObjectUrl,
    sha256: bool,
) -> anyhow::Result<VerifyReport> {
    let expected = async {
        let stat = source.stat(&source_url.path).await?;
        let range = ByteRange::new(0, stat.size)?;
        let mut stream = source.read_range(&source_url.path, range, stat).await?;
        let mut h = Hasher::new(sha256);
        while let Some(chunk) = stream.next().await {
            h.update(&chunk?);
        }
        anyhow::Ok(h.finish())
    };
    let actual = async {
        let stream = store
            .get_object(dest)
            .await
            .with_context(|| format!("read {dest}"))?;
        decompress(stream, sha256)
            .await
            .with_context(|| format!("decompress {dest}"))
    };
    let (expected, actual) = tokio::try_join!(
        async { expected.await.with_context(|| format!("read {source_url}")) },
        actual
    )?;
    let (expected, (actual, object_bytes)) = (expected, actual);
    let recorded_crc32 = match store.get_tags(dest).await {
        Ok(tags) => tags
            .get(gzship_core::master::CRC32_TAG)
            .and_then(|v| u32::from_str_radix(v, 16).ok()),
        Err(e) => {
            tracing::warn!(error = %gzship_core::error::chain(&e), "cannot read the object's tags");
            None
        }
    };
    Ok(VerifyReport {
        source: source_url.to_string(),
        destination: dest.to_string(),
        object_bytes,
        ok: expected == actual && recorded_crc32.is_none_or(|c| c == actual.crc32),
        expected,
        actual,
        recorded_crc32,
    })
}

/// Decompresses every member of the object on a blocking thread; returns the digest of the
/// decompressed bytes and the compressed size.
async fn decompress(mut stream: ByteStream, sha256: bool) -> anyhow::Result<(Digest32, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let decoder = tokio::task::spawn_blocking(move || {
        let mut d = Gunzip::new(Hasher::new(sha256));
        while let Some(chunk) = rx.blocking_recv() {
            d.write(&chunk).with_context(|| {
                format!(
                    "gzip data is corrupt near compressed byte {}",
                    d.compressed()
                )
            })?;
        }
        let compressed = d.compressed();
        if compressed == 0 {
            bail!("the object is empty, which is not a gzip file");
        }
        let h = d
            .finish()
            .context("the gzip stream ends in the middle of a member")?;
        anyhow::Ok((h.finish(), compressed))
    });
    while let Some(chunk) = stream.next().await {
        if tx.send(chunk?).await.is_err() {
            break; // the decoder failed; its error is below
        }
    }
    drop(tx);
    let (digest, compressed) = decoder.await.context("decoder thread")??;
    Ok((digest, compressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&'static [u8]]) -> ByteStream {
        let chunks: Vec<gzship_core::Result<bytes::Bytes>> = chunks
            .iter()
            .map(|c| Ok(bytes::Bytes::from_static(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn an_empty_object_is_named_as_such() {
        // The decoder refused it first, as "ends in the middle of a member".
        let err = decompress(stream(&[]), false).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("the object is empty"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn members_decode_and_truncation_is_named() {
        let (digest, size) = decompress(
            stream(&[
                &gzship_core::gzip::EMPTY_MEMBER[..7],
                &gzship_core::gzip::EMPTY_MEMBER[7..],
            ]),
            true,
        )
        .await
        .unwrap();
        assert_eq!((digest.bytes, size), (0, 20));
        let err = decompress(stream(&[&gzship_core::gzip::EMPTY_MEMBER[..12]]), false)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("middle of a member"), "{err:#}");
    }
}
