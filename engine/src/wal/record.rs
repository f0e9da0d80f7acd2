//! Payloads of movement records: `{ recorded_at | Movement | Outcome | Effects }` in postcard.

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
    pub movement: Movement,
    pub outcome: Outcome,
    pub effects: Effects,
}

/// Decodes a movement record's payload; also returns the movement's own bytes (for its body hash).
pub fn decode_movement_payload(payload: &[u8]) -> Result<(MovementRecord, &[u8]), postcard::Error> {
    let (recorded_at, rest) = postcard::take_from_bytes::<Millis>(payload)?;
    let (movement, after_movement) = postcard::take_from_bytes::<Movement>(rest)?;
    let movement_bytes = &rest[..rest.len() - after_movement.len()];
    let (outcome, rest) = postcard::take_from_bytes::<Outcome>(after_movement)?;
    let (effects, rest) = postcard::take_from_bytes::<Effects>(rest)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok((MovementRecord { recorded_at, movement, outcome, effects }, movement_bytes))
}

/// Decodes what replay needs of a movement record: time, movement (and its bytes), outcome.
/// The effects that follow are not decoded.
pub fn decode_movement_head(payload: &[u8]) -> Result<(Millis, Movement, &[u8], Outcome), postcard::Error> {
    let (recorded_at, rest) = postcard::take_from_bytes::<Millis>(payload)?;
    let (movement, after_movement) = postcard::take_from_bytes::<Movement>(rest)?;
    let movement_bytes = &rest[..rest.len() - after_movement.len()];
    let (outcome, _) = postcard::take_from_bytes::<Outcome>(after_movement)?;
    Ok((recorded_at, movement, movement_bytes, outcome))
}
