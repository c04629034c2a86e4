//! S3 adapter of [`MultipartStore`](super::MultipartStore) on aws-sdk-s3. (being written)
