//! Frames over a QUIC receive stream: the one part of the protocol module that touches quinn,
//! shared by the server and the client.
//!
//! A frame must arrive whole within `request_timeout` of its first byte: a peer that trickles
//! bytes is cut off with [`ReadFailure::TooSlow`]. Waiting between frames is not limited here
//! (the connection's idle timeout covers a silent peer).

use super::frame::{FrameBuffer, FrameError};
use std::time::Duration;
use tokio::time::Instant;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error(transparent)]
    TooLarge(#[from] FrameError),
    #[error("a frame did not arrive whole within {0:?}")]
    TooSlow(Duration),
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error("the stream was reset by the peer with code {0}")]
    Reset(u64),
    #[error("connection lost: {0}")]
    ConnectionLost(quinn::ConnectionError),
    #[error("{0}")]
    Other(String),
}

impl From<quinn::ReadError> for ReadFailure {
    fn from(e: quinn::ReadError) -> ReadFailure {
        match e {
            quinn::ReadError::Reset(code) => ReadFailure::Reset(code.into_inner()),
            quinn::ReadError::ConnectionLost(c) => ReadFailure::ConnectionLost(c),
            other => ReadFailure::Other(other.to_string()),
        }
    }
}

/// Reads frames from a receive stream.
pub struct FrameReader {
    pub recv: quinn::RecvStream,
    buf: FrameBuffer,
    request_timeout: Duration,
    /// When the first byte of the frame now being received arrived.
    partial_since: Option<Instant>,
}

impl FrameReader {
    pub fn new(recv: quinn::RecvStream, frame_bytes_max: usize, request_timeout: Duration) -> FrameReader {
        FrameReader { recv, buf: FrameBuffer::new(frame_bytes_max), request_timeout, partial_since: None }
    }

    /// The next payload; `None` when the peer finished the stream between frames.
    /// Cancel-safe: dropping the future loses no byte.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, ReadFailure> {
        loop {
            if let Some(range) = self.next_buffered_range()? {
                return Ok(Some(self.buf.slice(range)));
            }
            let deadline = self.partial_since.map(|t| t + self.request_timeout);
            let spare = self.buf.spare();
            let read = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, self.recv.read(spare)).await {
                    Ok(r) => r,
                    Err(_) => return Err(ReadFailure::TooSlow(self.request_timeout)),
                },
                None => self.recv.read(spare).await,
            };
            match read? {
                Some(n) => {
                    self.buf.filled(n);
                    if self.partial_since.is_none() && n > 0 {
                        self.partial_since = Some(Instant::now());
                    }
                }
                None if self.buf.is_partial() => return Err(ReadFailure::Truncated),
                None => return Ok(None),
            }
        }
    }

    /// The next payload if it is already whole in the buffer (it came with an earlier read),
    /// without reading the stream: `None` when the next frame has not fully arrived.
    pub fn next_buffered(&mut self) -> Result<Option<&[u8]>, ReadFailure> {
        Ok(self.next_buffered_range()?.map(|range| self.buf.slice(range)))
    }

    fn next_buffered_range(&mut self) -> Result<Option<std::ops::Range<usize>>, ReadFailure> {
        let range = self.buf.next_range()?;
        if range.is_some() {
            self.partial_since = self.buf.is_partial().then(Instant::now);
        }
        Ok(range)
    }
}
