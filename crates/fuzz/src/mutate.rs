//! A small seeded mutator, so the test suite can run every target on inputs near its corpus
//! without an instrumented build: bit flips, interesting bytes and integers, insertions,
//! deletions, duplications, tokens of the target's format and splices of two corpus inputs.
//! It has no coverage feedback: it finds shallow bugs near the corpus; `cargo fuzz` finds the
//! rest (and grows the corpus this replays).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs are kept at most this long, as libFuzzer's default `-max_len`.
pub const MAX_LEN: usize = 4096;

/// Tokens worth inserting whatever the format: JSON, URL, HTTP, SFTP and gzip pieces.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551615",
    b"4294967295",
    b"\\u0000",
    b"\\ud800",
    b"/",
    b"//",
    b"/..",
    b"%",
    b"%00",
    b"%zz",
    b"@",
    b"[",
    b"]:",
    b"sftp://",
    b"s3://",
    b"{path}",
    b"{name}",
    b"{{",
    b"}}",
    b"\r\n",
    b"\r\n\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"?uploadId=1&partNumber=",
    b"<Part>",
    b"</Part>",
    b"&#x",
    b";",
    b"|1|",
    b"!",
    b"*",
    b"?",
    b"@revoked ",
    b"\x1f\x8b\x08",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x00\x04\x00\x00",
    b"\n",
    b" ",
    b"\t",
    b"\xc3\xa9",
];

const INTERESTING_U32: &[u32] = &[
    0,
    1,
    4,
    5,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x4_0000,
    0x7fff_ffff,
    0xffff_ffff,
];

/// Seeded mutations of a corpus.
#[derive(Debug)]
pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    /// A mutator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A new input: one of `corpus` (or nothing, if it is empty) with 1 to 8 mutations.
    pub fn next(&mut self, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut data = if corpus.is_empty() {
            Vec::new()
        } else {
            corpus[self.rng.random_range(0..corpus.len())].clone()
        };
        for _ in 0..self.rng.random_range(1..=8) {
            self.mutate(&mut data, corpus);
        }
        data.truncate(MAX_LEN);
        data
    }

    fn pos(&mut self, data: &[u8]) -> usize {
        self.rng.random_range(0..=data.len())
    }

    fn mutate(&mut self, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        match self.rng.random_range(0..9) {
            0 if !data.is_empty() => {
                let i = self.rng.random_range(0..data.len());
                data[i] ^= 1 << self.rng.random_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = self.rng.random_range(0..data.len());
                data[i] = self.rng.random();
            }
            2 => {
                let at = self.pos(data);
                let n = self.rng.random_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                data.splice(at..at, bytes);
            }
            3 if !data.is_empty() => {
                let at = self.rng.random_range(0..data.len());
                let n = self.rng.random_range(1..=(data.len() - at).min(16));
                data.drain(at..at + n);
            }
            4 if !data.is_empty() => {
                let at = self.rng.random_range(0..data.len());
                let n = self.rng.random_range(1..=(data.len() - at).min(64));
                let copy = data[at..at + n].to_vec();
                let to = self.pos(data);
                data.splice(to..to, copy);
            }
            5 => {
                let token = TOKENS[self.rng.random_range(0..TOKENS.len())];
                let at = self.pos(data);
                data.splice(at..at, token.iter().copied());
            }
            6 if data.len() >= 4 => {
                let v = INTERESTING_U32[self.rng.random_range(0..INTERESTING_U32.len())];
                let at = self.rng.random_range(0..=data.len() - 4);
                data[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            7 if !corpus.is_empty() => {
                let other = &corpus[self.rng.random_range(0..corpus.len())];
                let from = self.pos(other);
                let to = self.rng.random_range(from..=other.len());
                let at = self.pos(data);
                data.truncate(at);
                data.extend_from_slice(&other[from..to]);
            }
            _ => {
                // Replace a run of ASCII digits with an extreme number.
                let numbers: [&[u8]; 5] =
                    [b"0", b"-1", b"99999999999999999999", b"4294967296", b"1.5"];
                let from = self.pos(data);
                if let Some(start) = data[from..]
                    .iter()
                    .position(u8::is_ascii_digit)
                    .map(|n| from + n)
                {
                    let end = data[start..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(data.len(), |n| start + n);
                    let n = numbers[self.rng.random_range(0..numbers.len())];
                    data.splice(start..end, n.iter().copied());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_bounded() {
        let corpus = vec![b"{\"a\": 1}".to_vec(), vec![0; MAX_LEN]];
        let run = |seed| {
            let mut m = Mutator::new(seed);
            (0..200).map(|_| m.next(&corpus)).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.iter().all(|d| d.len() <= MAX_LEN));
        assert!(a.iter().any(|d| !corpus.contains(d)));
    }
}
