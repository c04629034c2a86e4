//! S3's CRC32C checksums in S3's forms: a part's (`x-amz-checksum-crc32c`, 4 big-endian bytes in
//! base64) and a multipart object's composite one. One copy, for the S3 store and gzship-s3lite.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// S3's form of a CRC32C: the 4 big-endian bytes, base64.
pub fn encode_crc32c(crc: u32) -> String {
    BASE64.encode(crc.to_be_bytes())
}

/// Parses S3's form of a CRC32C. A composite one (`...-N`) is not a part's and is refused.
pub fn decode_crc32c(s: &str) -> Result<u32, String> {
    let bytes = BASE64
        .decode(s)
        .map_err(|e| format!("checksum {s:?} is not base64: {e}"))?;
    let bytes: [u8; 4] = bytes
        .try_into()
        .map_err(|_| format!("checksum {s:?} is not 4 bytes long"))?;
    Ok(u32::from_be_bytes(bytes))
}

/// The CRC32C S3 gives an object made of parts whose CRC32Cs are `parts`, in part order (a
/// "composite" checksum): the CRC32C of the parts' CRC32Cs, each as 4 big-endian bytes.
pub fn composite_crc32c(parts: impl IntoIterator<Item = u32>) -> u32 {
    parts.into_iter().fold(0, |crc, part| {
        crc32c::crc32c_append(crc, &part.to_be_bytes())
    })
}

/// The composite checksum of parts whose CRC32Cs are `parts`, as S3 shows it on the object:
/// base64, then `-N` for `N` parts.
pub fn encode_composite_crc32c(parts: impl IntoIterator<Item = u32>) -> String {
    let mut n = 0_usize;
    let crc = composite_crc32c(parts.into_iter().inspect(|_| n += 1));
    format!("{}-{n}", encode_crc32c(crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_round_trips_in_s3_form() {
        let crc = crc32c::crc32c(b"hello world");
        assert_eq!(crc, 0xc994_65aa);
        let s = encode_crc32c(crc);
        assert_eq!(s, "yZRlqg==");
        assert_eq!(decode_crc32c(&s), Ok(crc));
        assert!(decode_crc32c("AAAA").is_err());
        assert!(decode_crc32c("yZRlqg==-3").is_err());
    }

    #[test]
    fn composite_checksum_is_the_crc32c_of_the_parts_crc32cs() {
        let expect = crc32c::crc32c(&[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(composite_crc32c([1, 2]), expect);
        assert_eq!(
            encode_composite_crc32c([1, 2]),
            format!("{}-2", encode_crc32c(expect))
        );
    }
}
