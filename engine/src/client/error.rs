//! Errors of the client library, with the protocol code they carry and whether a retry may help.

use crate::core::Seq;
use crate::protocol::ErrorCode;
use std::time::Duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad settings: an address, certificate or token that cannot be used. Says what to do.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached or the TLS handshake failed.
    #[error("cannot connect to {server}: {message}")]
    Connect { server: String, message: String },
    /// The server refused the request or closed the connection with a protocol code
    /// (`unauthenticated`, `forbidden`, `batch_too_large`, `shutting_down`, ...).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// The change feed no longer has the records asked for.
    #[error("feed_truncated: the log no longer keeps records before {oldest_available}; take a snapshot and follow from its sequence number + 1")]
    FeedTruncated { oldest_available: Seq },
    /// The connection broke while the request was out.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError::Refused { code: code.as_str().into(), message: message.into() }
    }

    /// The protocol code of a refusal (`None` for local and transport errors).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            ClientError::FeedTruncated { .. } => Some(ErrorCode::FeedTruncated.as_str()),
            _ => None,
        }
    }

    /// Whether the same request may succeed if sent again (on a new connection if need be).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::ConnectionLost(_) | ClientError::Timeout(_) => true,
            ClientError::Refused { code, .. } => matches!(
                ErrorCode::parse(code),
                Some(
                    ErrorCode::ShuttingDown
                        | ErrorCode::TooManyRequests
                        | ErrorCode::TooManyConnections
                        | ErrorCode::TooSlow
                )
            ),
            _ => false,
        }
    }

    /// Whether the connection it happened on is gone.
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            ClientError::ConnectionLost(_) | ClientError::Connect { .. } => true,
            ClientError::Refused { code, .. } => {
                matches!(ErrorCode::parse(code), Some(ErrorCode::ShuttingDown | ErrorCode::TooSlow))
            }
            _ => false,
        }
    }

    pub(crate) fn from_connection(e: &quinn::ConnectionError) -> ClientError {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => {
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                match ErrorCode::from_app_code(close.error_code.into_inner()) {
                    Some(code) => {
                        let message = reason.strip_prefix(&format!("{code}: ")).unwrap_or(&reason).to_string();
                        ClientError::refused(code, message)
                    }
                    None => ClientError::ConnectionLost(format!("closed by the server: {reason}")),
                }
            }
            quinn::ConnectionError::ConnectionClosed(close)
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                ClientError::ConnectionLost("the server refused the connection (it may be shutting down)".into())
            }
            other => ClientError::ConnectionLost(other.to_string()),
        }
    }

    pub(crate) fn from_read(e: crate::protocol::stream::ReadFailure) -> ClientError {
        use crate::protocol::stream::ReadFailure;
        match e {
            ReadFailure::ConnectionLost(c) => ClientError::from_connection(&c),
            ReadFailure::Reset(code) => match ErrorCode::from_app_code(code) {
                Some(code) => ClientError::refused(code, "the server closed the stream"),
                None => ClientError::ConnectionLost(format!("the server reset the stream ({code})")),
            },
            other => ClientError::ConnectionLost(other.to_string()),
        }
    }
}
