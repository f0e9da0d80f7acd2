//! Checkpoints: a consistent copy of every shard, written atomically.
//!
//! ```text
//! File (checkpoint-<seq>.ckpt, seq = the lowest last_seq of its shards):
//!   { magic "PRPTCKP1" 8 | format_version u32 | shard_count u32 | payload_len u64 | payload_crc u32 | header_crc u32 }
//!   then payload_len bytes: postcard(CheckpointBody)
//! ```

use super::format::{checkpoint_file_name, CHECKPOINT_MAGIC, FORMAT_VERSION};
use super::segment::sync_dir;
use crate::core::{Millis, Seq, ShardSnapshot};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const CHECKPOINT_HEADER_LEN: usize = 32;
/// How many checkpoints are kept (the newest, and older ones in case it is damaged).
pub const CHECKPOINTS_KEPT: usize = 2;

/// What a checkpoint holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    pub taken_at: Millis,
    /// Every hold id handed out so far has a counter at most this.
    pub hold_counter: u64,
    /// One per shard, in shard order; each is the shard's state after its `last_seq`.
    pub shards: Vec<ShardSnapshot>,
}

impl CheckpointBody {
    /// Every record at or below this sequence number is covered by the checkpoint.
    pub fn covered_seq(&self) -> Seq {
        self.shards.iter().map(|s| s.last_seq).min().unwrap_or(0)
    }
}

/// Writes a checkpoint atomically (temporary file, fsync, rename, fsync of the directory) and
/// removes all but the newest [`CHECKPOINTS_KEPT`]. Returns its path.
pub fn write_checkpoint(dir: &Path, body: &CheckpointBody) -> io::Result<PathBuf> {
    let payload = postcard::to_stdvec(body).map_err(io::Error::other)?;
    let mut header = [0u8; CHECKPOINT_HEADER_LEN];
    header[0..8].copy_from_slice(CHECKPOINT_MAGIC);
    header[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
    header[12..16].copy_from_slice(&(body.shards.len() as u32).to_le_bytes());
    header[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());

    let path = dir.join(checkpoint_file_name(body.covered_seq()));
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&header)?;
    f.write_all(&payload)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    for old in list_checkpoints(dir)?.into_iter().rev().skip(CHECKPOINTS_KEPT) {
        fs::remove_file(old.1)?;
    }
    Ok(path)
}

/// Checkpoint files in `dir`, oldest first.
pub fn list_checkpoints(dir: &Path) -> io::Result<Vec<(Seq, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let seq = name.strip_prefix("checkpoint-").and_then(|s| s.strip_suffix(".ckpt"));
        if let Some(seq) = seq.and_then(|s| s.parse::<Seq>().ok()) {
            out.push((seq, path));
        } else if name.ends_with(".tmp") {
            // A checkpoint that was being written when the process stopped.
            fs::remove_file(&path)?;
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and verifies one checkpoint file.
pub fn read_checkpoint(path: &Path) -> Result<CheckpointBody, String> {
    let data = fs::read(path).map_err(|e| e.to_string())?;
    if data.len() < CHECKPOINT_HEADER_LEN {
        return Err("shorter than its header".into());
    }
    let h = &data[..CHECKPOINT_HEADER_LEN];
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
    if &h[0..8] != CHECKPOINT_MAGIC {
        return Err("not a Perpetua checkpoint (bad magic)".into());
    }
    if crc32c::crc32c(&h[0..28]) != u32_at(28) {
        return Err("header checksum mismatch".into());
    }
    if u32_at(8) != FORMAT_VERSION as u32 {
        return Err(format!("format version {}, this build reads {FORMAT_VERSION}", u32_at(8)));
    }
    let len = u64::from_le_bytes(h[16..24].try_into().unwrap());
    let payload = &data[CHECKPOINT_HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!("payload is {} bytes, header says {len}", payload.len()));
    }
    if crc32c::crc32c(payload) != u32_at(24) {
        return Err("payload checksum mismatch".into());
    }
    let (body, rest) =
        postcard::take_from_bytes::<CheckpointBody>(payload).map_err(|e| format!("payload does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the checkpoint body", rest.len()));
    }
    if body.shards.len() != u32_at(12) as usize {
        return Err("shard count in header and payload differ".into());
    }
    Ok(body)
}
