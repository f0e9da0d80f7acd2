//! Protocol-level error codes: the strings carried in [`ResponseBody::Error`] and the numbers used
//! to close a QUIC connection or reset a stream.
//!
//! Movement outcomes use the engine's own reasons ([`crate::core::Reason::code`]); the codes here
//! are about a request as a whole (it did not reach the engine) or about the connection.
//!
//! [`ResponseBody::Error`]: super::ResponseBody::Error

/// Why a request, stream or connection was refused. Each has a stable snake_case code on the wire
/// and a QUIC application error code used when the server closes a connection or resets a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The hello carried no valid token, or the token was revoked.
    Unauthenticated,
    /// The token's role does not allow this request (nothing was changed).
    Forbidden,
    /// The hello asked for a protocol version this server does not speak.
    UnsupportedVersion,
    /// A frame's declared length is above `frame_bytes_max`. The stream is closed.
    FrameTooLarge,
    /// A batch has more than `batch_movements_max` movements.
    BatchTooLarge,
    /// A payload could not be decoded, or a request was out of place (a second hello).
    Malformed,
    /// More than `requests_in_flight_max` requests of one connection are being processed.
    TooManyRequests,
    /// More than `streams_max` streams are open on one connection.
    TooManyStreams,
    /// The server has `connections_max` connections (sent as a refused connection).
    TooManyConnections,
    /// A frame did not arrive whole within `request_timeout_ms`. The connection is closed.
    TooSlow,
    /// The change feed was asked for records older than the log keeps.
    FeedTruncated,
    /// A subscriber fell more than `feed_buffer_events_max` events behind. The stream is reset.
    SlowConsumer,
    /// The server is shutting down: reconnect later.
    ShuttingDown,
    /// A token id, SKU or other named thing does not exist.
    NotFound,
    /// A field of a request is out of range (an empty name, a bad role).
    InvalidRequest,
    /// The change feed cannot be read (an I/O error or a damaged log file on the server).
    FeedUnavailable,
    /// Anything else that went wrong on the server; the message says what.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::Malformed,
        ErrorCode::TooManyRequests,
        ErrorCode::TooManyStreams,
        ErrorCode::TooManyConnections,
        ErrorCode::TooSlow,
        ErrorCode::FeedTruncated,
        ErrorCode::SlowConsumer,
        ErrorCode::ShuttingDown,
        ErrorCode::NotFound,
        ErrorCode::InvalidRequest,
        ErrorCode::FeedUnavailable,
        ErrorCode::Internal,
    ];

    /// The stable code on the wire, in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooSlow => "too_slow",
            ErrorCode::FeedTruncated => "feed_truncated",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::FeedUnavailable => "feed_unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Parses a code from the wire; unknown codes (from a newer server) give `None`.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The QUIC application error code used in CONNECTION_CLOSE, RESET_STREAM and STOP_SENDING.
    pub fn app_code(self) -> u32 {
        APP_CLOSE_CODES.iter().find(|(c, _)| *c == self).map_or(APP_CODE_INTERNAL, |&(_, n)| n)
    }

    /// The code of a QUIC application error code, if it is one of ours.
    pub fn from_app_code(n: u64) -> Option<ErrorCode> {
        APP_CLOSE_CODES.iter().find(|&&(_, v)| v as u64 == n).map(|&(c, _)| c)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Application error code of a normal close (a client or server that is done).
pub const APP_CODE_DONE: u32 = 0;
const APP_CODE_INTERNAL: u32 = 17;

/// QUIC application error codes. 0 is a normal close; the numbers are part of the protocol.
pub const APP_CLOSE_CODES: [(ErrorCode, u32); 17] = [
    (ErrorCode::Unauthenticated, 1),
    (ErrorCode::Forbidden, 2),
    (ErrorCode::UnsupportedVersion, 3),
    (ErrorCode::FrameTooLarge, 4),
    (ErrorCode::BatchTooLarge, 5),
    (ErrorCode::Malformed, 6),
    (ErrorCode::TooManyRequests, 7),
    (ErrorCode::TooManyStreams, 8),
    (ErrorCode::TooManyConnections, 9),
    (ErrorCode::TooSlow, 10),
    (ErrorCode::FeedTruncated, 11),
    (ErrorCode::SlowConsumer, 12),
    (ErrorCode::ShuttingDown, 13),
    (ErrorCode::NotFound, 14),
    (ErrorCode::InvalidRequest, 15),
    (ErrorCode::FeedUnavailable, 16),
    (ErrorCode::Internal, APP_CODE_INTERNAL),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert_eq!(ErrorCode::from_app_code(c.app_code() as u64), Some(c));
            assert!(seen.insert(c.app_code()), "{c} reuses an application code");
        }
        assert_eq!(ErrorCode::parse("nope"), None);
        assert_eq!(ErrorCode::from_app_code(0), None);
    }
}
