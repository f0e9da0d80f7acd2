//! Payloads of movement records: `{ recorded_at | body_hash | Movement | Outcome | Effects }` in postcard.

use crate::core::{Effects, Millis, Movement, Outcome};
use serde::Serialize;

/// Appends the postcard encoding of `value` to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(value, taken).expect("in-memory encoding cannot fail");
}

/// A decoded movement record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovementRecord {
    pub recorded_at: Millis,
    /// [`crate::core::body_hash`] of the movement as submitted (0 without an idempotency key).
    pub body_hash: u64,
    pub movement: Movement,
    pub outcome: Outcome,
    pub effects: Effects,
}

/// Decodes a movement record's payload.
pub fn decode_movement_payload(payload: &[u8]) -> Result<MovementRecord, postcard::Error> {
    let (recorded_at, rest) = postcard::take_from_bytes::<Millis>(payload)?;
    let (body_hash, rest) = postcard::take_from_bytes::<u64>(rest)?;
    let (movement, rest) = postcard::take_from_bytes::<Movement>(rest)?;
    let (outcome, rest) = postcard::take_from_bytes::<Outcome>(rest)?;
    let (effects, rest) = postcard::take_from_bytes::<Effects>(rest)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok(MovementRecord { recorded_at, body_hash, movement, outcome, effects })
}

/// Decodes what replay needs of a movement record: time, body hash, movement, outcome. The
/// effects that follow are not decoded.
pub fn decode_movement_head(payload: &[u8]) -> Result<(Millis, u64, Movement, Outcome), postcard::Error> {
    let (recorded_at, rest) = postcard::take_from_bytes::<Millis>(payload)?;
    let (body_hash, rest) = postcard::take_from_bytes::<u64>(rest)?;
    let (movement, rest) = postcard::take_from_bytes::<Movement>(rest)?;
    let (outcome, _) = postcard::take_from_bytes::<Outcome>(rest)?;
    Ok((recorded_at, body_hash, movement, outcome))
}
