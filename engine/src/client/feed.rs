//! Following the change feed: a subscription on a stream of its own that resumes after a broken
//! connection or a server restart from the next sequence number it has not delivered, so its
//! events have no gap and no duplicate.

use super::{Client, ClientError};
use crate::core::Seq;
use crate::protocol::stream::FrameReader;
use crate::protocol::*;

/// Events delivered by one [`Subscription::next`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedBatch {
    /// Every matching record up to this sequence number has now been delivered.
    pub through_seq: Seq,
    pub events: Vec<FeedEvent>,
}

struct Live {
    _send: quinn::SendStream,
    reader: FrameReader,
}

/// A change-feed subscription. Dropping it ends it.
pub struct Subscription {
    client: Client,
    filter: FeedFilter,
    /// The next sequence number to deliver.
    position: Seq,
    live: Option<Live>,
    /// Resubscriptions after a broken connection.
    pub reconnects: u64,
}

const SUBSCRIBE_ID: u64 = 1;

impl Subscription {
    pub(super) async fn start(client: Client, from_seq: Seq, filter: FeedFilter) -> Result<Subscription, ClientError> {
        let mut s = Subscription { client, filter, position: from_seq, live: None, reconnects: 0 };
        s.open().await?;
        Ok(s)
    }

    /// The sequence number the next event will have at least (where a resubscription starts).
    pub fn position(&self) -> Seq {
        self.position
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let conn = self.client.connection().await?;
        let (mut send, recv) = conn.quic.open_bi().await.map_err(|e| {
            conn.mark_broken();
            ClientError::from_connection(&e)
        })?;
        let mut frame = Vec::new();
        encode_request(
            &mut frame,
            SUBSCRIBE_ID,
            &RequestBody::Subscribe { from_seq: self.position, filter: self.filter },
        );
        send.write_all(&frame).await.map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
        let timeout = self.client.config().request_timeout;
        let mut live = Live { _send: send, reader: FrameReader::new(recv, SERVER_FRAME_BYTES_MAX, timeout) };
        // The server confirms with an empty batch (or says why not).
        match tokio::time::timeout(timeout, Self::read(&mut live)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Timeout(timeout)),
        }
        self.live = Some(live);
        Ok(())
    }

    async fn read(live: &mut Live) -> Result<FeedBatch, ClientError> {
        let payload = match live.reader.next().await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(ClientError::ConnectionLost("the server ended the feed".into())),
            Err(e) => return Err(ClientError::from_read(e)),
        };
        let response = Response::decode(payload).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match response.body {
            ResponseBody::Feed { through_seq, events } => Ok(FeedBatch { through_seq, events }),
            ResponseBody::FeedTruncated { oldest_available } => Err(ClientError::FeedTruncated { oldest_available }),
            ResponseBody::Error { code, message } => Err(ClientError::Refused { code, message }),
            other => Err(super::unexpected("feed events", &other)),
        }
    }

    /// The next events. Resubscribes by itself after a broken connection or a server restart
    /// (within the client's retry policy); other errors (`slow_consumer`, `feed_truncated`,
    /// `forbidden`) are returned, and a later call resubscribes from [`Subscription::position`].
    pub async fn next(&mut self) -> Result<FeedBatch, ClientError> {
        let policy = self.client.config().retry;
        let mut backoff = policy.backoff_first;
        let mut attempt = 0;
        loop {
            let result = match &mut self.live {
                Some(live) => Self::read(live).await,
                None => match self.open().await {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(mut batch) => {
                    // A resubscription may repeat what was delivered: drop it.
                    batch.events.retain(|e| e.seq >= self.position);
                    self.position = self.position.max(batch.through_seq.saturating_add(1));
                    if let Some(last) = batch.events.last() {
                        self.position = self.position.max(last.seq + 1);
                    }
                    return Ok(batch);
                }
                Err(e) => {
                    self.live = None;
                    if e.is_transient() && attempt < policy.retries {
                        attempt += 1;
                        self.reconnects += 1;
                        tracing::debug!(error = %e, position = self.position, "resubscribing");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(policy.backoff_max);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }
}
