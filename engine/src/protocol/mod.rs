//! The wire protocol between `stockd` and its clients: framing, messages, codes and limits.
//!
//! Layout (see `docs/protocol.md` for the byte-level specification):
//! - one QUIC connection (ALPN [`ALPN`]) carries client-opened bidirectional streams;
//! - each stream carries frames `{ length: u32 LE | payload }` in both directions ([`frame`]);
//! - a payload is a request `{ id: varint | RequestBody }` or a response `{ id: varint |
//!   ResponseBody }` in postcard encoding ([`message`]); responses carry the id of their request
//!   and may arrive in any order;
//! - the first frame of the first stream is [`RequestBody::Hello`] with the token.
//!
//! Architecture invariant: apart from [`stream`] (frames over a quinn stream, shared by server and
//! client), this module does no I/O. It turns bytes into messages and back, so the decoder can be
//! fuzzed on its own and the server and client share one definition.

pub mod codes;
pub mod frame;
pub mod limits;
pub mod message;
pub mod stream;

#[cfg(test)]
mod fuzz;

pub use codes::{ErrorCode, APP_CLOSE_CODES};
pub use frame::{encode_frame, FrameBuffer, FrameError, FRAME_HEADER_LEN};
pub use limits::Limits;
pub use message::*;

/// The ALPN protocol id a client must offer.
pub const ALPN: &[u8] = b"perpetua/2";
/// The ALPN of protocol version 1. A server still accepts it in the handshake, only to answer
/// the hello of such a client with `unsupported_version` (clearer than a failed handshake).
pub const ALPN_V1: &[u8] = b"perpetua/1";
/// The protocol version carried in the hello. A server answers another version with
/// `unsupported_version`. Version 2: movements and their effects carry lots, serial numbers,
/// kits and allocations (`docs/protocol.md`, section 14).
pub const PROTOCOL_VERSION: u32 = 2;
/// The largest frame a server sends (a client should accept frames up to this size).
/// Feed and level listings are split into frames well below it.
pub const SERVER_FRAME_BYTES_MAX: usize = 16 << 20;
/// Target size of one frame of a chunked answer (levels, snapshots, feed batches).
pub const CHUNK_BYTES_TARGET: usize = 256 << 10;
