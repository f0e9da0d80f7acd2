//! Framing: every stream is a sequence of frames `{ length: u32 LE | payload: length bytes }`.
//!
//! [`FrameBuffer`] collects bytes as they arrive and hands out whole payloads; it checks the
//! declared length against the limit before buffering a byte of the payload, so an oversized
//! frame costs the reader nothing.

use serde::Serialize;

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// How much a reader asks for at a time (the buffer grows beyond it only for a larger frame):
/// small, because every open stream has one.
const READ_CHUNK_BYTES: usize = 8 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is above the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Appends `{ length | postcard(msg) }` to `buf`.
pub fn encode_frame<T: Serialize + ?Sized>(buf: &mut Vec<u8>, msg: &T) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    crate::wal::record::encode_into(buf, msg);
    finish_frame(buf, start);
}

/// Writes the length prefix of the frame that starts at `start` and runs to the end of `buf`.
pub fn finish_frame(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start - FRAME_HEADER_LEN) as u32;
    buf[start..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
}

/// Bytes read from a stream, cut into frames.
///
/// Invariant: `data[start..end]` holds the unread bytes; `data.len()` is the allocation.
pub struct FrameBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    frame_bytes_max: usize,
}

impl FrameBuffer {
    /// A buffer that refuses frames whose payload is above `frame_bytes_max`.
    pub fn new(frame_bytes_max: usize) -> FrameBuffer {
        FrameBuffer { data: vec![0; READ_CHUNK_BYTES], start: 0, end: 0, frame_bytes_max }
    }

    /// Space to read into (at least a read chunk, or what the current frame still needs).
    /// Call [`FrameBuffer::filled`] with the number of bytes written there.
    pub fn spare(&mut self) -> &mut [u8] {
        let buffered = self.end - self.start;
        let wanted = self
            .pending_frame_len()
            .filter(|&n| n <= self.frame_bytes_max)
            .map_or(0, |n| (n + FRAME_HEADER_LEN).saturating_sub(buffered));
        let wanted = wanted.max(READ_CHUNK_BYTES.min(self.frame_bytes_max + FRAME_HEADER_LEN));
        if self.data.len() - self.end < wanted {
            // Move the unread bytes to the front, then grow if that is still not enough.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() - self.end < wanted {
                self.data.resize(self.end + wanted, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of [`FrameBuffer::spare`] as read.
    pub fn filled(&mut self, n: usize) {
        assert!(self.end + n <= self.data.len(), "filled past the spare space");
        self.end += n;
    }

    /// Appends bytes (for tests and the fuzzer; readers use `spare`/`filled`).
    pub fn extend(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            self.filled(n);
            rest = &rest[n..];
        }
    }

    /// The next whole payload, if one is buffered. An oversized frame is an error and the buffer
    /// must not be used afterwards (the stream's framing cannot be trusted).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        Ok(self.next_range()?.map(|r| &self.data[r]))
    }

    /// [`FrameBuffer::next_frame`] as a range for [`FrameBuffer::slice`], valid until the next
    /// call of `spare`, `extend` or `next_*`.
    pub fn next_range(&mut self) -> Result<Option<std::ops::Range<usize>>, FrameError> {
        let Some(len) = self.pending_frame_len() else { return Ok(None) };
        if len > self.frame_bytes_max {
            return Err(FrameError::TooLarge { len, max: self.frame_bytes_max });
        }
        if self.end - self.start < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.start + FRAME_HEADER_LEN;
        self.start = payload + len;
        if self.start == self.end {
            // Empty: start over at the front so the next read needs no copy.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(payload..payload + len))
    }

    /// The bytes of a range from [`FrameBuffer::next_range`].
    pub fn slice(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.data[range]
    }

    /// True when part of a frame has arrived but not all of it.
    pub fn is_partial(&self) -> bool {
        self.end > self.start
    }

    /// The declared payload length of the frame at the front, once its header is in.
    fn pending_frame_len(&self) -> Option<usize> {
        let header = self.data.get(self.start..self.start + FRAME_HEADER_LEN).filter(|_| self.end - self.start >= 4)?;
        Some(u32::from_le_bytes(header.try_into().expect("four bytes")) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let payloads: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], vec![7; 100_000], b"xyz".to_vec()];
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        for cut in [1, 3, 4, 5, 1000, 65_536, stream.len()] {
            let mut fb = FrameBuffer::new(1 << 20);
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                fb.extend(chunk);
                while let Some(p) = fb.next_frame().unwrap() {
                    got.push(p.to_vec());
                }
            }
            assert_eq!(got, payloads, "cut {cut}");
            assert!(!fb.is_partial());
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        let mut fb = FrameBuffer::new(10);
        fb.extend(&frame(b"0123456789"));
        assert_eq!(fb.next_frame().unwrap(), Some(&b"0123456789"[..]));
        fb.extend(&11u32.to_le_bytes());
        assert_eq!(fb.next_frame(), Err(FrameError::TooLarge { len: 11, max: 10 }));
    }

    #[test]
    fn a_partial_header_or_payload_is_partial() {
        let mut fb = FrameBuffer::new(100);
        fb.extend(&[3, 0]);
        assert!(fb.is_partial());
        assert_eq!(fb.next_frame().unwrap(), None);
        fb.extend(&[0, 0, 1, 2]);
        assert_eq!(fb.next_frame().unwrap(), None);
        fb.extend(&[3]);
        assert_eq!(fb.next_frame().unwrap(), Some(&[1, 2, 3][..]));
        assert!(!fb.is_partial());
    }
}
