//! Decoding a gzip object (any number of members, as gzship writes them) from a stream of
//! chunks: what `gzship verify` runs over an object it reads back, and the fuzz target of the
//! member parser (`crates/fuzz`).

use std::io::{self, Write};

use flate2::write::MultiGzDecoder;

/// Decompresses every member of a gzip stream fed in chunks of any size into `W`, counting the
/// compressed bytes. Memory is bounded: nothing is kept beyond the decoder's window.
#[derive(Debug)]
pub struct Gunzip<W: Write> {
    decoder: MultiGzDecoder<W>,
    compressed: u64,
}

impl<W: Write> Gunzip<W> {
    /// A decoder writing the decompressed bytes to `out`.
    pub fn new(out: W) -> Self {
        Gunzip {
            decoder: MultiGzDecoder::new(out),
            compressed: 0,
        }
    }

    /// Decodes the next chunk of the object. An error means the data is not gzip, or is corrupt
    /// at or before [`compressed`](Self::compressed) bytes.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.compressed += chunk.len() as u64;
        self.decoder.write_all(chunk)
    }

    /// Compressed bytes fed so far.
    pub fn compressed(&self) -> u64 {
        self.compressed
    }

    /// Ends the stream and returns the output. Fails when the stream ends in the middle of a
    /// member, or is empty (a gzip file has at least one member).
    pub fn finish(self) -> io::Result<W> {
        self.decoder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gzip::EMPTY_MEMBER;

    #[test]
    fn members_and_empty_members_decode_in_any_chunking() {
        let mut object = Vec::new();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"hello ").unwrap();
        object.extend(e.finish().unwrap());
        object.extend_from_slice(&EMPTY_MEMBER);
        object.extend_from_slice(&EMPTY_MEMBER);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"world").unwrap();
        object.extend(e.finish().unwrap());
        for chunk in [1, 7, object.len()] {
            let mut g = Gunzip::new(Vec::new());
            for c in object.chunks(chunk) {
                g.write(c).unwrap();
            }
            assert_eq!(g.compressed(), object.len() as u64);
            assert_eq!(g.finish().unwrap(), b"hello world");
        }
    }

    #[test]
    fn truncated_and_corrupt_objects_are_errors() {
        assert!(
            Gunzip::new(Vec::new()).finish().is_err(),
            "no member at all"
        );
        let mut g = Gunzip::new(Vec::new());
        g.write(&EMPTY_MEMBER[..15]).unwrap();
        assert!(g.finish().is_err(), "a member cut short");
        let mut bad = EMPTY_MEMBER;
        bad[2] = 7; // not deflate
        let mut g = Gunzip::new(Vec::new());
        assert!(g.write(&bad).is_err() || g.finish().is_err());
    }
}
