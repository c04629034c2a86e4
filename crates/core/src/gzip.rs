//! gzip framing: one block of input becomes one complete gzip member (RFC 1952), and padding
//! members that decode to zero bytes.
//!
//! The object gzship writes is a concatenation of members, so blocks compress independently on
//! every core and the result is still one standard `.gz` file. Compression uses libdeflate,
//! which is the fastest deflate on one core that we measured (see the README's performance
//! section); each block is compressed in one call from a buffer, which libdeflate requires.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// gzip's fixed overhead per member: a 10-byte header and an 8-byte trailer.
pub const MEMBER_OVERHEAD: u64 = 18;

/// The smallest gzip member: empty content, no optional fields. The whole object for an empty
/// source file.
pub const EMPTY_MEMBER: [u8; 20] = [
    0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff, // header: no flags, no mtime, OS unknown
    0x03, 0x00, // final fixed-Huffman block holding only end-of-block
    0, 0, 0, 0, // CRC-32 of nothing
    0, 0, 0, 0, // ISIZE
];

/// Size of the smallest padding member: an [`EMPTY_MEMBER`].
pub const PADDING_MEMBER_MIN: u64 = EMPTY_MEMBER.len() as u64;
/// An empty stored deflate block, not final: BFINAL 0, BTYPE 00, padded to a byte, LEN 0,
/// NLEN 0xffff. zlib writes exactly these bytes on every sync flush, so every inflater knows
/// them.
const EMPTY_STORED_BLOCK: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];

/// Deflate's worst case is stored blocks; libdeflate starts a new block at most every 5000 input
/// bytes (its `MIN_BLOCK_LENGTH`), 5 bytes of overhead each. We assume a block every 4096 bytes so
/// the bound holds with margin; a test checks it against libdeflate's own bound.
const WORST_CASE_BLOCK: u64 = 4096;

/// A compression level, 1 (fastest) to 9 (smallest), default 6 like gzip.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Level(u8);

impl Level {
    /// Validates `n` in 1..=9.
    pub fn new(n: u8) -> Result<Self> {
        if (1..=9).contains(&n) {
            Ok(Level(n))
        } else {
            Err(Error::invalid(
                "compression level",
                format!("{n} is outside 1..=9"),
            ))
        }
    }

    /// The level as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Level {
    fn default() -> Self {
        Level(6)
    }
}

impl TryFrom<u8> for Level {
    type Error = Error;
    fn try_from(n: u8) -> Result<Self> {
        Level::new(n)
    }
}

impl From<Level> for u8 {
    fn from(l: Level) -> u8 {
        l.0
    }
}

impl fmt::Debug for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {}", self.0)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The largest gzip member a block of `input_len` bytes can become, at any level.
pub fn member_bound(input_len: u64) -> u64 {
    let deflate_blocks = input_len.div_ceil(WORST_CASE_BLOCK).max(1);
    MEMBER_OVERHEAD + input_len + 5 * deflate_blocks
}

/// One compressed block.
#[derive(Debug, Clone)]
pub struct Member {
    /// The complete gzip member.
    pub bytes: Bytes,
    /// CRC-32 of the block's input.
    pub crc32: u32,
    /// Length of the block's input.
    pub input_len: u64,
}

/// Compresses blocks into gzip members. One per thread: it owns libdeflate's state (a few
/// hundred KiB), which is reused across blocks.
pub struct BlockCompressor {
    inner: libdeflater::Compressor,
    level: Level,
    /// Output buffer reused across blocks: allocating and zeroing a block-sized buffer for every
    /// block cost more than copying out the compressed bytes (about a ninth of it for logs).
    out: Vec<u8>,
}

impl fmt::Debug for BlockCompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCompressor")
            .field("level", &self.level)
            .finish()
    }
}

impl BlockCompressor {
    /// A compressor at `level`.
    pub fn new(level: Level) -> Self {
        let lvl = libdeflater::CompressionLvl::new(i32::from(level.get()))
            .unwrap_or_else(|_| libdeflater::CompressionLvl::default());
        BlockCompressor {
            inner: libdeflater::Compressor::new(lvl),
            level,
            out: Vec::new(),
        }
    }

    /// The level this compressor was made for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Compresses `block` (taken from source offset `offset`, for error messages) into one
    /// complete gzip member.
    pub fn compress(&mut self, block: &[u8], offset: u64) -> Result<Member> {
        let bound = self.inner.gzip_compress_bound(block.len());
        if self.out.len() < bound {
            self.out.resize(bound, 0);
        }
        let n = self
            .inner
            .gzip_compress(block, &mut self.out[..bound])
            .map_err(|e| Error::Compress {
                offset,
                source: format!("libdeflate: {e:?}").into(),
            })?;
        let out = &self.out[..n];
        // libdeflate writes the CRC-32 of the input into the trailer; read it back rather than
        // hashing the block a second time.
        let crc32 = u32::from_le_bytes(
            out[n - 8..n - 4]
                .try_into()
                .expect("a gzip member ends with an 8-byte trailer"),
        );
        Ok(Member {
            bytes: Bytes::copy_from_slice(out),
            crc32,
            input_len: block.len() as u64,
        })
    }
}

/// Appends one padding member of exactly `len` bytes (at least [`PADDING_MEMBER_MIN`]; a
/// shorter request is rounded up to it) to `out`.
///
/// A padding member is a plain gzip member (the header of [`EMPTY_MEMBER`], no optional
/// fields) whose deflate stream holds only empty blocks, so it decodes to zero bytes and its
/// size is set by how many blocks it holds: empty stored blocks (5 bytes each), then 1 to 4
/// empty fixed-Huffman blocks (10 bits each, the last one final) or one fixed and a final
/// stored block, which together reach every byte count. Readers with fixed header buffers
/// (DuckDB, busybox gunzip) reject large FEXTRA fields, and every member boundary is a chance
/// for Java's `GZIPInputStream` to stop early (JDK-7036144), so there is one member and no
/// FEXTRA. Never put padding first in an object: some tools read the first member's header
/// for metadata.
pub fn push_padding(out: &mut Vec<u8>, len: u64) {
    let len = len.max(PADDING_MEMBER_MIN);
    // The deflate stream lies between the 10-byte header and the 8-byte trailer.
    let deflate = len - MEMBER_OVERHEAD;
    let stored_blocks = (deflate - 2) / 5;
    let tail: &[u8] = match (deflate - 2) % 5 {
        // Fixed-Huffman empty blocks: BFINAL, BTYPE 01, end-of-block (7 zero bits).
        0 => &[0x03, 0x00],                   // one, final: 10 bits
        1 => &[0x02, 0x0c, 0x00],             // two, the last final: 20 bits
        2 => &[0x02, 0x08, 0x30, 0x00],       // three: 30 bits
        3 => &[0x02, 0x08, 0x20, 0xc0, 0x00], // four: 40 bits
        // One fixed empty block (10 bits), then a final empty stored block: BFINAL 1, BTYPE
        // 00 (3 bits, then to the byte boundary), LEN 0, NLEN 0xffff.
        _ => &[0x02, 0x04, 0x00, 0x00, 0xff, 0xff],
    };
    out.reserve(len as usize);
    out.extend_from_slice(&EMPTY_MEMBER[..10]);
    for _ in 0..stored_blocks {
        out.extend_from_slice(&EMPTY_STORED_BLOCK);
    }
    out.extend_from_slice(tail);
    out.extend_from_slice(&EMPTY_MEMBER[12..]);
}

/// CRC-32 of `a ++ b` from `crc(a)`, `crc(b)` and `len(b)`.
pub fn crc32_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    let mut a = crc32fast::Hasher::new_with_initial_len(crc_a, 0);
    let b = crc32fast::Hasher::new_with_initial_len(crc_b, len_b);
    a.combine(&b);
    a.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode_all(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn levels_are_validated() {
        assert!(Level::new(0).is_err());
        assert!(Level::new(10).is_err());
        assert_eq!(Level::default().get(), 6);
        assert!(serde_json::from_str::<Level>("12").is_err());
    }

    #[test]
    fn empty_member_decodes_to_nothing() {
        assert_eq!(decode_all(&EMPTY_MEMBER), b"");
        let mut c = BlockCompressor::new(Level::default());
        let m = c.compress(b"", 0).unwrap();
        assert_eq!(m.crc32, 0);
        assert_eq!(decode_all(&m.bytes), b"");
    }

    #[test]
    fn members_round_trip_and_report_crc() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for level in 1..=9 {
            let mut c = BlockCompressor::new(Level::new(level).unwrap());
            let m = c.compress(&data, 0).unwrap();
            assert_eq!(m.crc32, crc32fast::hash(&data));
            assert_eq!(m.input_len, data.len() as u64);
            assert_eq!(decode_all(&m.bytes), data);
        }
    }

    #[test]
    fn bound_covers_libdeflate_and_random_data() {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        for n in [
            0usize,
            1,
            4095,
            4096,
            4097,
            5000,
            65_536,
            1 << 20,
            4 << 20,
            64 << 20,
        ] {
            assert!(
                member_bound(n as u64) >= c.gzip_compress_bound(n) as u64,
                "n={n}"
            );
        }
        let mut rng_state = 0x9e3779b97f4a7c15u64;
        let random: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state as u8
            })
            .collect();
        let mut bc = BlockCompressor::new(Level::new(9).unwrap());
        let m = bc.compress(&random, 0).unwrap();
        assert!(m.bytes.len() as u64 <= member_bound(random.len() as u64));
        assert!(
            m.bytes.len() > random.len(),
            "random data does not compress"
        );
    }

    #[test]
    fn padding_has_exact_size_and_decodes_to_nothing() {
        // Every residue of the block arithmetic, and the sizes tasks need.
        let lens = (0..64).chain([5_000, 65_535, 65_536, (5 << 20) - 1, 5 << 20]);
        for len in lens {
            let mut out = Vec::new();
            push_padding(&mut out, len);
            assert_eq!(out.len() as u64, len.max(PADDING_MEMBER_MIN), "len={len}");
            assert_eq!(out[3], 0, "len={len}: no optional header fields");
            assert_eq!(decode_all(&out), b"", "len={len}");
            let mut s = Vec::new();
            assert_eq!(rfc1952_decode(&out, &mut s), 1, "len={len}: one member");
            assert_eq!(s, b"", "len={len}");
            let mut buf = [0u8; 1];
            let n = libdeflater::Decompressor::new()
                .gzip_decompress(&out, &mut buf)
                .unwrap_or_else(|e| panic!("len={len}: libdeflate: {e}"));
            assert_eq!(n, 0, "len={len}");
        }
    }

    #[test]
    fn padding_after_data_keeps_the_data() {
        let mut c = BlockCompressor::new(Level::default());
        let mut out = c.compress(b"hello ", 0).unwrap().bytes.to_vec();
        push_padding(&mut out, 100_000);
        out.extend_from_slice(&c.compress(b"world", 6).unwrap().bytes);
        assert_eq!(decode_all(&out), b"hello world");
        let mut s = Vec::new();
        rfc1952_decode(&out, &mut s);
        assert_eq!(s, b"hello world");
    }

    /// A second, independent decoder: a minimal RFC 1952 walker over raw inflate,
    /// parsing FEXTRA itself, so the padding format is checked against the RFC and not only
    /// against a library's gzip wrapper.
    /// Returns the number of members.
    fn rfc1952_decode(mut data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut members = 0;
        while !data.is_empty() {
            members += 1;
            assert_eq!(&data[..3], &[0x1f, 0x8b, 0x08]);
            let flg = data[3];
            let mut pos = 10;
            if flg & 0x04 != 0 {
                let xlen = u16::from_le_bytes([data[pos], data[pos + 1]]) as usize;
                let extra = &data[pos + 2..pos + 2 + xlen];
                let mut sub = extra;
                while !sub.is_empty() {
                    let l = u16::from_le_bytes([sub[2], sub[3]]) as usize;
                    sub = &sub[4 + l..];
                }
                pos += 2 + xlen;
            }
            let mut inflate = flate2::Decompress::new(false);
            let mut buf = Vec::with_capacity(1 << 20);
            let status = inflate
                .decompress_vec(&data[pos..], &mut buf, flate2::FlushDecompress::Finish)
                .unwrap();
            assert_eq!(status, flate2::Status::StreamEnd);
            out.extend_from_slice(&buf);
            pos += inflate.total_in() as usize;
            let crc = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap());
            assert_eq!(crc, crc32fast::hash(&buf));
            data = &data[pos + 8..];
        }
        members
    }

    #[test]
    fn crc_combines() {
        let a = b"the quick brown fox ";
        let b = b"jumps over the lazy dog";
        let whole = [&a[..], &b[..]].concat();
        assert_eq!(
            crc32_combine(crc32fast::hash(a), crc32fast::hash(b), b.len() as u64),
            crc32fast::hash(&whole)
        );
        assert_eq!(crc32_combine(crc32fast::hash(a), 0, 0), crc32fast::hash(a));
        assert_eq!(
            crc32_combine(0, crc32fast::hash(b), b.len() as u64),
            crc32fast::hash(b)
        );
    }
}
