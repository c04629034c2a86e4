//! A client: reads a stream (stdin) in fixed-size parts and uploads them as one multipart
//! upload, some parts in flight at once, each with its CRC32C like gzship's own uploads. This
//! is the last stage of the pipeline a user would write, `ssh host cat FILE | pigz | <this>`,
//! the benchmark's comparison row; `aws s3 cp - s3://...` does the same with 8 MiB parts.

use anyhow::{Context, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

/// What was uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutReport {
    /// Bytes read from the input and uploaded.
    pub bytes: u64,
    /// Parts uploaded.
    pub parts: u32,
}

/// Upload settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOptions {
    /// Bytes per part (the last may be shorter). Default 16 MiB, gzship's default.
    pub part_size: usize,
    /// UploadPart requests at once. Default 4, gzship's default. Each holds one part.
    pub in_flight: usize,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            part_size: 16 << 20,
            in_flight: 4,
        }
    }
}

/// Reads `input` to its end and uploads it to `bucket`/`key`; aborts the upload on failure.
pub async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    input: impl AsyncRead + Unpin,
    options: PutOptions,
) -> anyhow::Result<PutReport> {
    if options.part_size < 1 || options.in_flight < 1 {
        bail!("part size and uploads in flight must be at least 1");
    }
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .send()
        .await
        .with_context(|| format!("create multipart upload of s3://{bucket}/{key}"))?;
    let upload_id = created
        .upload_id()
        .context("the CreateMultipartUpload reply has no UploadId")?
        .to_owned();
    let result = upload_all(client, bucket, key, &upload_id, input, options).await;
    if result.is_err() {
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await;
    }
    result
}

async fn upload_all(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    mut input: impl AsyncRead + Unpin,
    options: PutOptions,
) -> anyhow::Result<PutReport> {
    let mut uploads: JoinSet<anyhow::Result<CompletedPart>> = JoinSet::new();
    let mut done = Vec::new();
    let mut bytes = 0u64;
    let mut number = 0i32;
    loop {
        let part = read_part(&mut input, options.part_size)
            .await
            .context("read the input")?;
        // An empty input still makes one (empty) part, so the object exists.
        if part.is_empty() && number > 0 {
            break;
        }
        number += 1;
        bytes += part.len() as u64;
        let last = part.len() < options.part_size;
        while uploads.len() >= options.in_flight {
            if let Some(res) = uploads.join_next().await {
                done.push(res??);
            }
        }
        let (client, bucket, key, upload_id) = (
            client.clone(),
            bucket.to_owned(),
            key.to_owned(),
            upload_id.to_owned(),
        );
        uploads.spawn(async move {
            let crc = crc32c::crc32c(&part);
            let crc = gzship_core::store::checksum::encode_crc32c(crc);
            let out = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .checksum_crc32_c(&crc)
                .body(ByteStream::from(part))
                .send()
                .await
                .with_context(|| format!("upload part {number} of s3://{bucket}/{key}"))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .checksum_crc32_c(crc)
                .build())
        });
        if last {
            break;
        }
    }
    while let Some(res) = uploads.join_next().await {
        done.push(res??);
    }
    done.sort_by_key(|p| p.part_number());
    let parts = done.len() as u32;
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .with_context(|| format!("complete multipart upload of s3://{bucket}/{key}"))?;
    Ok(PutReport { bytes, parts })
}

/// Reads up to `size` bytes: fewer only at the end of the input.
async fn read_part(input: &mut (impl AsyncRead + Unpin), size: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let want = (size - buf.len()) as u64;
        let n = (&mut *input).take(want).read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}
