//! SFTP adapter of [`Source`](super::Source): russh + russh-sftp. (being written)
