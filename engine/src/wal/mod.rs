//! The write-ahead log: segment files of framed, checksummed records; checkpoints; recovery.
//! Byte layouts are in `format.rs` and, for readers in other languages, `docs/wal.md`.

pub mod checkpoint;
pub mod format;
pub mod record;
pub mod recovery;
pub mod segment;
