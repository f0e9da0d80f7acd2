//! Byte layouts of log segments and records (the reference is `docs/wal.md`).
//!
//! ```text
//! Segment header (SEGMENT_HEADER_LEN = 32 bytes, little-endian):
//!   { magic "PRPTWAL1" 8 | format_version u32 | reserved u32 = 0 | first_seq u64 | reserved u32 = 0 | header_crc u32 }
//! Record (RECORD_HEADER_LEN = 24 bytes, then payload_len bytes):
//!   { payload_len u32 | record_type u8 (1 movement, 2 nop, 3 movement raising alerts) | format_version u8 | shard u16 | seq u64 | payload_crc u32 | header_crc u32 }
//!   header_crc = CRC32C of the header's first 20 bytes; payload_crc = CRC32C of the payload.
//! Payload of a movement record (postcard): { recorded_at varint | body_hash varint | Movement | Outcome | Effects }
//! ```

use crate::core::Seq;

pub const SEGMENT_MAGIC: &[u8; 8] = b"PRPTWAL1";
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"PRPTCKP1";
/// Version of the segment, record and checkpoint layouts and of the payload types.
pub const FORMAT_VERSION: u8 = 2;
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 24;
/// Largest payload a record may declare; anything larger is corruption.
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = 1 << 20;

/// A movement with its outcome and effects.
pub const RECORD_TYPE_MOVEMENT: u8 = 1;
/// A sequence number taken but unused (no payload); readers skip it.
pub const RECORD_TYPE_NOP: u8 = 2;
/// A movement whose effects raise at least one alert: the payload of a [`RECORD_TYPE_MOVEMENT`].
/// The type lets readers that want only alerts skip every other record without decoding it.
pub const RECORD_TYPE_MOVEMENT_ALERTS: u8 = 3;

/// Whether a record of this type carries a movement (with or without alerts).
pub fn is_movement_type(record_type: u8) -> bool {
    record_type == RECORD_TYPE_MOVEMENT || record_type == RECORD_TYPE_MOVEMENT_ALERTS
}

/// A record's header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: u32,
    pub record_type: u8,
    pub version: u8,
    pub shard: u16,
    pub seq: Seq,
    pub payload_crc: u32,
}

/// Appends a framed record to `out`: header, then the payload already at `out[payload_start..]`
/// is moved behind it. Callers reserve the header with [`begin_record`] and finish with this.
pub fn finish_record(out: &mut [u8], header_at: usize, record_type: u8, shard: u16, seq: Seq) {
    let payload = &out[header_at + RECORD_HEADER_LEN..];
    let payload_len = u32::try_from(payload.len()).expect("payload fits u32");
    assert!(payload_len <= RECORD_PAYLOAD_BYTES_MAX, "record payload of {payload_len} bytes is over the limit");
    let payload_crc = crc32c::crc32c(payload);
    let h = &mut out[header_at..header_at + RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&payload_len.to_le_bytes());
    h[4] = record_type;
    h[5] = FORMAT_VERSION;
    h[6..8].copy_from_slice(&shard.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&header_crc.to_le_bytes());
}

/// Reserves room for a record header at the end of `out` and returns where it starts.
pub fn begin_record(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.resize(at + RECORD_HEADER_LEN, 0);
    at
}

/// Appends a record with no payload (a `RECORD_TYPE_NOP`).
pub fn push_nop(out: &mut Vec<u8>, shard: u16, seq: Seq) {
    let at = begin_record(out);
    finish_record(out, at, RECORD_TYPE_NOP, shard, seq);
}

/// Decodes a record header. `None` when its checksum does not match.
pub fn decode_record_header(h: &[u8; RECORD_HEADER_LEN]) -> Option<RecordHeader> {
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
    if crc32c::crc32c(&h[0..20]) != u32_at(20) {
        return None;
    }
    Some(RecordHeader {
        payload_len: u32_at(0),
        record_type: h[4],
        version: h[5],
        shard: u16::from_le_bytes([h[6], h[7]]),
        seq: u64::from_le_bytes(h[8..16].try_into().unwrap()),
        payload_crc: u32_at(16),
    })
}

/// The header of a new segment whose first record will be `first_seq`.
pub fn segment_header(first_seq: Seq) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment header into its first sequence number; an error says what is wrong.
pub fn decode_segment_header(h: &[u8]) -> Result<Seq, String> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err(format!("segment header is {} bytes, expected {SEGMENT_HEADER_LEN}", h.len()));
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("not a Perpetua log segment (bad magic)".into());
    }
    if crc32c::crc32c(&h[0..28]) != u32::from_le_bytes(h[28..32].try_into().unwrap()) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version != FORMAT_VERSION as u32 {
        return Err(format!("segment format version {version}, this build reads {FORMAT_VERSION}"));
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().unwrap()))
}

/// File name of the segment starting at `first_seq`.
pub fn segment_file_name(first_seq: Seq) -> String {
    format!("{first_seq:020}.wal")
}

/// File name of a checkpoint covering everything up to `seq`.
pub fn checkpoint_file_name(seq: Seq) -> String {
    format!("checkpoint-{seq:020}.ckpt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trips_and_detects_any_flipped_bit() {
        let mut buf = Vec::new();
        let at = begin_record(&mut buf);
        buf.extend_from_slice(b"payload");
        finish_record(&mut buf, at, RECORD_TYPE_MOVEMENT, 3, 42);
        assert_eq!(buf.len(), RECORD_HEADER_LEN + 7);
        let h = decode_record_header(buf[..RECORD_HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(
            h,
            RecordHeader {
                payload_len: 7,
                record_type: RECORD_TYPE_MOVEMENT,
                version: FORMAT_VERSION,
                shard: 3,
                seq: 42,
                payload_crc: crc32c::crc32c(b"payload"),
            }
        );
        for bit in 0..RECORD_HEADER_LEN * 8 {
            let mut h: [u8; RECORD_HEADER_LEN] = buf[..RECORD_HEADER_LEN].try_into().unwrap();
            h[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode_record_header(&h), None, "flipped bit {bit} went unnoticed");
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let h = segment_header(1234);
        assert_eq!(decode_segment_header(&h), Ok(1234));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(decode_segment_header(&bad), Err("not a Perpetua log segment (bad magic)".into()));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err("segment header checksum mismatch".into()));
    }
}
