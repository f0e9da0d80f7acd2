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
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
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
    let path = dir.join(checkpoint_file_name(body.covered_seq()));
    let tmp = path.with_extension("tmp");
    // The payload is streamed to the file (a checkpoint of millions of keys is hundreds of
    // megabytes: no copy of it in memory), its length and CRC counted on the way; the header,
    // which holds them, is written last, over the zeros that kept its place.
    let mut f = File::create(&tmp)?;
    f.write_all(&[0u8; CHECKPOINT_HEADER_LEN])?;
    // postcard writes byte by byte: buffer first, count and checksum whole buffers.
    let buffered = BufWriter::with_capacity(1 << 20, CountingWriter { inner: f, len: 0, crc: 0 });
    let buffered = postcard::to_io(body, buffered).map_err(io::Error::other)?;
    let counted = buffered.into_inner().map_err(|e| e.into_error())?;
    let (payload_len, payload_crc, mut f) = (counted.len, counted.crc, counted.inner);
    let mut header = [0u8; CHECKPOINT_HEADER_LEN];
    header[0..8].copy_from_slice(CHECKPOINT_MAGIC);
    header[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
    header[12..16].copy_from_slice(&(body.shards.len() as u32).to_le_bytes());
    header[16..24].copy_from_slice(&payload_len.to_le_bytes());
    header[24..28].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&header)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    for old in list_checkpoints(dir)?.into_iter().rev().skip(CHECKPOINTS_KEPT) {
        fs::remove_file(old.1)?;
    }
    Ok(path)
}

/// A writer that counts the bytes going through it and their CRC32C.
struct CountingWriter<W> {
    inner: W,
    len: u64,
    crc: u32,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.len += n as u64;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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

/// Checks a checkpoint header; gives the payload's length and CRC32C.
fn check_header(h: &[u8]) -> Result<(u64, u32), String> {
    if h.len() < CHECKPOINT_HEADER_LEN {
        return Err("shorter than its header".into());
    }
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
    Ok((u64::from_le_bytes(h[16..24].try_into().unwrap()), u32_at(24)))
}

/// Verifies a checkpoint file's checksums without decoding it (reading it in pieces): what
/// [`read_checkpoint`] checks before it decodes.
pub fn verify_checkpoint(path: &Path) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut header = Vec::with_capacity(CHECKPOINT_HEADER_LEN);
    (&mut f).take(CHECKPOINT_HEADER_LEN as u64).read_to_end(&mut header).map_err(|e| e.to_string())?;
    let (len, crc) = check_header(&header)?;
    let (mut read, mut actual, mut buf) = (0u64, 0u32, vec![0u8; 1 << 20]);
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        read += n as u64;
        actual = crc32c::crc32c_append(actual, &buf[..n]);
    }
    if read != len {
        return Err(format!("payload is {read} bytes, header says {len}"));
    }
    if actual != crc {
        return Err("payload checksum mismatch".into());
    }
    Ok(())
}

/// Reads and verifies one checkpoint file.
pub fn read_checkpoint(path: &Path) -> Result<CheckpointBody, String> {
    let data = fs::read(path).map_err(|e| e.to_string())?;
    let (len, crc) = check_header(&data)?;
    let payload = &data[CHECKPOINT_HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!("payload is {} bytes, header says {len}", payload.len()));
    }
    if crc32c::crc32c(payload) != crc {
        return Err("payload checksum mismatch".into());
    }
    let (body, rest) =
        postcard::take_from_bytes::<CheckpointBody>(payload).map_err(|e| format!("payload does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the checkpoint body", rest.len()));
    }
    if body.shards.len() != u32::from_le_bytes(data[12..16].try_into().unwrap()) as usize {
        return Err("shard count in header and payload differ".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Applied, Detail, Movement, MovementKind, ShardState};

    /// A shard with a level, a hold and more idempotency keys than one chunk of the key log.
    fn body() -> CheckpointBody {
        let mut shard = ShardState::default();
        let mut fx = crate::core::Effects::default();
        let receive = MovementKind::Receive {
            sku: "A".into(),
            location: "dc".into(),
            qty: 1_000_000,
            unit_cost: None,
            units: Default::default(),
        };
        let mv = |key: Option<String>, kind| Movement {
            key,
            channel: "web".into(),
            reference: None,
            occurred_at: None,
            kind,
        };
        assert_eq!(shard.apply(1, 1, &mv(None, receive), 0, &mut fx), Applied::Recorded(Ok(Detail::None)));
        for i in 0..20_000u64 {
            let sell = MovementKind::Sell {
                sku: "A".into(),
                location: "dc".into(),
                qty: 1,
                hold: None,
                allow_negative: false,
                unit_price: None,
                units: Default::default(),
            };
            fx.clear();
            let applied = shard.apply(2 + i, 2 + i, &mv(Some(format!("k{i}")), sell), i, &mut fx);
            assert_eq!(applied, Applied::Recorded(Ok(Detail::None)));
        }
        CheckpointBody { taken_at: 7, hold_counter: 3, shards: vec![shard.snapshot()] }
    }

    #[test]
    fn a_streamed_checkpoint_reads_back_equal_and_its_checksums_catch_damage() {
        let dir = tempfile::tempdir().unwrap();
        let body = body();
        let path = write_checkpoint(dir.path(), &body).unwrap();
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), checkpoint_file_name(20_001));
        assert_eq!(verify_checkpoint(&path), Ok(()));
        assert_eq!(read_checkpoint(&path).unwrap(), body);
        // The file is the header and postcard(body), nothing else.
        let data = fs::read(&path).unwrap();
        assert_eq!(&data[CHECKPOINT_HEADER_LEN..], postcard::to_allocvec(&body).unwrap());

        let mut flipped = data.clone();
        flipped[data.len() / 2] ^= 0x10;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(verify_checkpoint(&path), Err("payload checksum mismatch".into()));
        assert_eq!(read_checkpoint(&path).err(), Some("payload checksum mismatch".into()));
        fs::write(&path, &data[..data.len() - 1]).unwrap();
        let short = format!("payload is {} bytes, header says {}", data.len() - 33, data.len() - 32);
        assert_eq!(verify_checkpoint(&path), Err(short));
        let mut header = data.clone();
        header[17] ^= 1;
        fs::write(&path, &header).unwrap();
        assert_eq!(verify_checkpoint(&path), Err("header checksum mismatch".into()));
    }
}
