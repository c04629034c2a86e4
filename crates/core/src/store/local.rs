//! A local directory that behaves like an S3 bucket with multipart uploads. (being written)
