//! The limits a server enforces on its clients, with their defaults. A server announces them in
//! its welcome so that a client can stay inside them.

use serde::{Deserialize, Serialize};

/// Limits of one server. Sized types and units in the names, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame payload a client may send, in bytes.
    pub frame_bytes_max: u32,
    /// Most movements in one `submit` request.
    pub batch_movements_max: u32,
    /// Most requests of one connection being processed at once (over all its streams).
    pub requests_in_flight_max: u32,
    /// Most streams one connection may have open at once.
    pub streams_max: u32,
    /// Time allowed for a frame to arrive whole once its first byte has arrived, in milliseconds.
    pub request_timeout_ms: u64,
    /// A connection with no traffic for this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Most change-feed events buffered for one subscriber before it is cut off.
    pub feed_buffer_events_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            frame_bytes_max: 1 << 20,
            batch_movements_max: 4096,
            requests_in_flight_max: 4096,
            streams_max: 16,
            request_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            feed_buffer_events_max: 100_000,
        }
    }
}

impl Limits {
    /// Checks that the limits make sense together; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.frame_bytes_max < 4096 {
            return Err(format!("frame_bytes_max must be at least 4096, not {}", self.frame_bytes_max));
        }
        if self.frame_bytes_max as usize > super::SERVER_FRAME_BYTES_MAX {
            return Err(format!(
                "frame_bytes_max must be at most {}, not {}",
                super::SERVER_FRAME_BYTES_MAX,
                self.frame_bytes_max
            ));
        }
        for (name, v) in [
            ("batch_movements_max", self.batch_movements_max),
            ("requests_in_flight_max", self.requests_in_flight_max),
            ("streams_max", self.streams_max),
            ("feed_buffer_events_max", self.feed_buffer_events_max),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.streams_max > 10_000 {
            return Err(format!("streams_max must be at most 10000, not {}", self.streams_max));
        }
        if self.request_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return Err("request_timeout_ms and idle_timeout_ms must be above 0".into());
        }
        Ok(())
    }
}
