//! The bytes of one part, in memory or spooled to a temporary file, with their length and
//! CRC32C known before the upload starts (S3's UploadPart needs both up front).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tempfile::TempPath;

use crate::error::{Error, Result};
use crate::source::ByteStream;

/// One part's body. Cheap to clone; a spooled file is deleted when the last clone is dropped,
/// whether the upload succeeded, failed or was cancelled.
#[derive(Clone)]
pub struct PartBody {
    data: Data,
    len: u64,
    crc32c: u32,
}

/// Where a [`PartBody`]'s bytes are.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// In memory.
    Memory(&'a Bytes),
    /// In a spool file.
    File(&'a Path),
}

#[derive(Clone)]
enum Data {
    Memory(Bytes),
    File(Arc<TempPath>),
}

impl PartBody {
    /// A body held in memory; computes its CRC32C.
    pub fn from_bytes(bytes: Bytes) -> Self {
        PartBody {
            crc32c: crc32c::crc32c(&bytes),
            len: bytes.len() as u64,
            data: Data::Memory(bytes),
        }
    }

    /// A body whose CRC32C the caller computed while filling `bytes`.
    pub(crate) fn memory(bytes: Bytes, crc32c: u32) -> Self {
        PartBody {
            len: bytes.len() as u64,
            data: Data::Memory(bytes),
            crc32c,
        }
    }

    /// A body spooled to the file at `path` (deleted when the body is dropped), `len` bytes
    /// with CRC32C `crc32c`.
    pub(crate) fn spooled(path: TempPath, len: u64, crc32c: u32) -> Self {
        PartBody {
            data: Data::File(Arc::new(path)),
            len,
            crc32c,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// CRC32C of the bytes.
    pub fn crc32c(&self) -> u32 {
        self.crc32c
    }

    /// Where the bytes are.
    pub fn content(&self) -> Content<'_> {
        match &self.data {
            Data::Memory(b) => Content::Memory(b),
            Data::File(p) => Content::File(p),
        }
    }

    /// Streams the bytes (from memory, or the spool file in 1 MiB reads).
    pub async fn stream(&self) -> Result<ByteStream> {
        match &self.data {
            Data::Memory(b) => Ok(futures::stream::once(std::future::ready(Ok(b.clone()))).boxed()),
            Data::File(path) => {
                let file = tokio::fs::File::open(path.to_path_buf())
                    .await
                    .map_err(|e| Error::io("open spooled part", path, e))?;
                let owned = Arc::clone(path);
                Ok(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
                    .map(move |chunk| chunk.map_err(|e| Error::io("read spooled part", &owned, e)))
                    .boxed())
            }
        }
    }
}

impl From<Bytes> for PartBody {
    fn from(bytes: Bytes) -> Self {
        PartBody::from_bytes(bytes)
    }
}

impl fmt::Debug for PartBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("PartBody");
        d.field("len", &self.len)
            .field("crc32c", &format_args!("{:08x}", self.crc32c));
        if let Data::File(p) = &self.data {
            d.field("spooled", &p.display());
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spooled_body_streams_its_file_and_deletes_it_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("part");
        std::fs::write(&path, &data).unwrap();
        let body = PartBody::spooled(
            TempPath::try_from_path(&path).unwrap(),
            data.len() as u64,
            crc32c::crc32c(&data),
        );
        let copy = body.clone();
        drop(body);
        let mut got = Vec::new();
        let mut s = copy.stream().await.unwrap();
        while let Some(chunk) = s.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, data);
        assert!(path.exists());
        drop(s);
        drop(copy);
        assert!(!path.exists(), "the spool file outlived its body");
    }
}
