//! Log segment files: writing (append, sync, roll) and scanning records back.

use super::format::*;
use crate::core::Seq;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An open segment being appended to.
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    bytes: u64,
}

impl SegmentWriter {
    /// Creates a new segment whose first record is `first_seq`, and makes its name durable.
    pub fn create(dir: &Path, first_seq: Seq) -> io::Result<SegmentWriter> {
        let path = dir.join(segment_file_name(first_seq));
        let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        file.write_all(&segment_header(first_seq))?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(SegmentWriter { file, path, bytes: SEGMENT_HEADER_LEN as u64 })
    }

    /// Reopens an existing segment to append after its last valid record.
    pub fn reopen(path: &Path) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new().append(true).open(path)?;
        let bytes = file.metadata()?.len();
        Ok(SegmentWriter { file, path: path.to_owned(), bytes })
    }

    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// `fdatasync`: the appended records are on disk when this returns Ok.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Segments in `dir`, sorted by first sequence number (taken from the file name).
pub fn list_segments(dir: &Path) -> io::Result<Vec<(Seq, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse::<Seq>().ok()) {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// A record read back from a segment.
#[derive(Debug)]
pub struct RecordRef<'a> {
    /// Byte offset of the record's header in the file.
    pub offset: usize,
    pub header: RecordHeader,
    pub payload: &'a [u8],
}

/// Why scanning stopped before the end of the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanStop {
    /// An incomplete last record, as a crash mid-write leaves: safe to cut off at `offset`.
    Torn { offset: usize, why: String },
    /// Damage that a crash cannot explain: recovery must refuse.
    Corrupt { offset: usize, why: String },
}

/// Iterates the records of a segment's bytes (after its header).
pub struct RecordIter<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> RecordIter<'a> {
    /// `data` is the whole segment file; records start after the segment header.
    pub fn new(data: &'a [u8]) -> RecordIter<'a> {
        RecordIter { data, pos: SEGMENT_HEADER_LEN.min(data.len()) }
    }

    /// Records of `data` from byte `pos` on (a record boundary); offsets are relative to `data`.
    pub fn from_offset(data: &'a [u8], pos: usize) -> RecordIter<'a> {
        RecordIter { data, pos: pos.min(data.len()) }
    }

    /// Where the next record starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn next_record(&mut self) -> Result<Option<RecordRef<'a>>, ScanStop> {
        let (data, offset) = (self.data, self.pos);
        let rest = &data[offset..];
        if rest.is_empty() {
            return Ok(None);
        }
        let torn = |why: &str| Err(ScanStop::Torn { offset, why: why.into() });
        let corrupt = |why: String| Err(ScanStop::Corrupt { offset, why });
        if rest.iter().all(|&b| b == 0) {
            return torn("zero-filled tail");
        }
        if rest.len() < RECORD_HEADER_LEN {
            return torn("incomplete record header");
        }
        // A damaged record followed by nothing but zeros is what a crash leaves when the file grew
        // before its data reached the disk: a torn tail. With data after it, it is corruption.
        let Some(header) = decode_record_header(rest[..RECORD_HEADER_LEN].try_into().unwrap()) else {
            if rest[RECORD_HEADER_LEN..].iter().all(|&b| b == 0) {
                return torn("last record header damaged, nothing after it");
            }
            return corrupt("record header checksum mismatch".into());
        };
        if header.version != FORMAT_VERSION {
            return corrupt(format!("record format version {}, this build reads {FORMAT_VERSION}", header.version));
        }
        if header.payload_len > RECORD_PAYLOAD_BYTES_MAX {
            return corrupt(format!("record payload length {} is over the limit", header.payload_len));
        }
        let end = RECORD_HEADER_LEN + header.payload_len as usize;
        if rest.len() < end {
            return torn("incomplete record payload");
        }
        let payload = &rest[RECORD_HEADER_LEN..end];
        if crc32c::crc32c(payload) != header.payload_crc {
            if rest[end..].iter().all(|&b| b == 0) {
                return torn("last record's payload checksum mismatch");
            }
            return corrupt("record payload checksum mismatch".into());
        }
        self.pos += end;
        Ok(Some(RecordRef { offset, header, payload }))
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, ScanStop>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(stop) => {
                self.pos = self.data.len();
                Some(Err(stop))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(payloads: &[&[u8]]) -> Vec<u8> {
        let mut data = segment_header(1).to_vec();
        for (i, p) in payloads.iter().enumerate() {
            let at = begin_record(&mut data);
            data.extend_from_slice(p);
            finish_record(&mut data, at, RECORD_TYPE_MOVEMENT, 0, 1 + i as u64);
        }
        data
    }

    fn scan(data: &[u8]) -> (Vec<Seq>, Option<ScanStop>) {
        let mut seqs = Vec::new();
        for r in RecordIter::new(data) {
            match r {
                Ok(r) => seqs.push(r.header.seq),
                Err(stop) => return (seqs, Some(stop)),
            }
        }
        (seqs, None)
    }

    #[test]
    fn scans_every_record_of_a_clean_segment() {
        let data = segment_with(&[b"a", b"bb", b"ccc"]);
        assert_eq!(scan(&data), (vec![1, 2, 3], None));
    }

    #[test]
    fn a_cut_anywhere_in_the_last_record_is_a_torn_tail_at_its_start() {
        let data = segment_with(&[b"first", b"second"]);
        let last_at = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 5;
        for cut in last_at + 1..data.len() {
            let (seqs, stop) = scan(&data[..cut]);
            assert_eq!(seqs, vec![1], "cut at {cut}");
            assert!(matches!(stop, Some(ScanStop::Torn { offset, .. }) if offset == last_at), "cut at {cut}: {stop:?}");
        }
        assert_eq!(scan(&data[..last_at]), (vec![1], None));
    }

    #[test]
    fn a_damaged_last_record_followed_only_by_zeros_is_a_torn_tail() {
        let data = segment_with(&[b"first", b"second"]);
        let last_at = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 5;
        // A damaged header that ends the file, and a damaged payload followed by zeros.
        for (flip, keep) in [(last_at + 2, last_at + RECORD_HEADER_LEN), (last_at + RECORD_HEADER_LEN + 1, data.len())]
        {
            let mut bad = data[..keep].to_vec();
            bad[flip] ^= 1;
            bad.extend_from_slice(&[0; 100]);
            let (seqs, stop) = scan(&bad);
            assert_eq!(seqs, vec![1]);
            assert!(
                matches!(stop, Some(ScanStop::Torn { offset, .. }) if offset == last_at),
                "flip at {flip}: {stop:?}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_before_the_last_record_is_corruption() {
        let data = segment_with(&[b"first", b"second", b"third"]);
        let second_at = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 5;
        let third_at = second_at + RECORD_HEADER_LEN + 6;
        for i in SEGMENT_HEADER_LEN..third_at {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            let (_, stop) = scan(&bad);
            assert!(matches!(stop, Some(ScanStop::Corrupt { .. })), "flip at {i}: {stop:?}");
        }
    }
}
