//! The change feed over a stream, and level snapshots.
//!
//! A subscription gets a thread of its own that reads the engine's [`Feed`] (blocking: log files,
//! then the durable point) and encodes frames; the stream's task writes them. Between the two,
//! at most `feed_buffer_events_max` events wait: past that the subscriber is cut off with
//! `slow_consumer` (its stream is reset), so a subscriber that stops reading costs a bounded
//! amount of memory and never holds up the engine.

use super::conn::{ConnCtx, Tx};
use crate::protocol::stream::FrameReader;
use crate::protocol::*;
use crate::runtime::{Feed, FeedError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// Records asked of the engine's feed at a time.
const FEED_BATCH_MAX: usize = 1024;
/// How long the feed thread waits for new records before it checks whether it should stop.
const FEED_POLL: Duration = Duration::from_millis(100);
/// A subscriber whose filter drops every record still hears how far the feed has got this often.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What the feed thread hands to the stream's task.
enum FeedMsg {
    /// An encoded frame and the number of events in it.
    Frame(Vec<u8>, usize),
    /// A last frame (an error); the stream ends after it.
    Last(Vec<u8>),
}

/// State shared by the feed thread and the stream's task.
struct Bridge {
    buffered_events: AtomicUsize,
    stop: AtomicBool,
    /// Set (and `slow` notified) when the subscriber fell too far behind.
    too_slow: AtomicBool,
    slow: Notify,
}

fn encode(id: u64, body: &ResponseBody) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_response(&mut buf, id, body);
    buf
}

/// Serves a subscription on its stream until the client goes away, is too slow, or the server
/// shuts down.
pub(super) async fn serve(
    ctx: Arc<ConnCtx>,
    id: u64,
    from_seq: u64,
    filter: FeedFilter,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
) {
    let engine = ctx.shared.engine.clone();
    let opened = tokio::task::spawn_blocking(move || {
        // A segment pruned between the engine listing it and opening it shows as an I/O error;
        // asked again, the engine sees it gone and says `Truncated`.
        let mut attempt = engine.feed(from_seq);
        for _ in 0..2 {
            if !matches!(attempt, Err(FeedError::Io(_))) {
                break;
            }
            attempt = engine.feed(from_seq);
        }
        attempt
    })
    .await;
    let feed = match opened {
        Ok(Ok(feed)) if filter == FeedFilter::AlertsOnly => feed.alerts_only(),
        Ok(Ok(feed)) => feed,
        Ok(Err(FeedError::Truncated { oldest_available, .. })) => {
            ctx.shared.metrics.error(ErrorCode::FeedTruncated);
            let _ = send.write_all(&encode(id, &ResponseBody::FeedTruncated { oldest_available })).await;
            return finish(send).await;
        }
        Ok(Err(e)) => return fail(&ctx, send, id, ErrorCode::FeedUnavailable, e.to_string()).await,
        Err(e) => return fail(&ctx, send, id, ErrorCode::Internal, e.to_string()).await,
    };
    // Confirm the subscription before any event.
    let confirm = ResponseBody::Feed { through_seq: from_seq.saturating_sub(1), events: Vec::new() };
    if send.write_all(&encode(id, &confirm)).await.is_err() {
        return;
    }
    let metrics = ctx.shared.metrics.clone();
    metrics.feed_subscribers.fetch_add(1, Ordering::Relaxed);
    let limit = ctx.shared.limits.feed_buffer_events_max as usize;
    let bridge = Arc::new(Bridge {
        buffered_events: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        too_slow: AtomicBool::new(false),
        slow: Notify::new(),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let thread_bridge = bridge.clone();
    let spawned = std::thread::Builder::new()
        .name("feed".into())
        .spawn(move || feed_thread(feed, id, filter, limit, thread_bridge, tx));
    if let Err(e) = spawned {
        metrics.feed_subscribers.fetch_sub(1, Ordering::Relaxed);
        return fail(&ctx, send, id, ErrorCode::Internal, format!("cannot start a feed thread: {e}")).await;
    }
    let remote = ctx.conn.remote_address();
    tracing::debug!(%remote, from_seq, ?filter, "subscriber joined");
    let mut shutdown = ctx.shared.shutdown.clone();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(FeedMsg::Frame(frame, events)) => {
                    let written = tokio::select! {
                        r = send.write_all(&frame) => r.is_ok(),
                        _ = bridge.slow.notified() => {
                            cut_off_slow(&ctx, &mut send, &mut reader, limit);
                            break;
                        }
                    };
                    bridge.buffered_events.fetch_sub(events, Ordering::AcqRel);
                    metrics.feed_events_sent.fetch_add(events as u64, Ordering::Relaxed);
                    if !written {
                        break;
                    }
                }
                Some(FeedMsg::Last(frame)) => {
                    let _ = send.write_all(&frame).await;
                    finish(send).await;
                    break;
                }
                None => {
                    if bridge.too_slow.load(Ordering::Acquire) {
                        cut_off_slow(&ctx, &mut send, &mut reader, limit);
                    }
                    break;
                }
            },
            _ = bridge.slow.notified() => {
                cut_off_slow(&ctx, &mut send, &mut reader, limit);
                break;
            }
            _ = super::stopping(&mut shutdown) => {
                let body = ResponseBody::error(ErrorCode::ShuttingDown, "the server is stopping; resubscribe later");
                let _ = tokio::time::timeout(Duration::from_secs(1), send.write_all(&encode(id, &body))).await;
                finish(send).await;
                break;
            }
            // The client sends nothing after subscribing: whatever comes (its end of the stream, a
            // reset) ends the subscription.
            _ = reader.next() => break,
        }
    }
    bridge.stop.store(true, Ordering::Release);
    metrics.feed_subscribers.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%remote, "subscriber left");
}

fn cut_off_slow(ctx: &ConnCtx, send: &mut quinn::SendStream, reader: &mut FrameReader, limit: usize) {
    let code = ErrorCode::SlowConsumer;
    ctx.shared.metrics.error(code);
    tracing::info!(remote = %ctx.conn.remote_address(), limit, "subscriber cut off: more than {limit} events waiting");
    let _ = send.reset(code.app_code().into());
    let _ = reader.recv.stop(code.app_code().into());
}

async fn fail(ctx: &ConnCtx, mut send: quinn::SendStream, id: u64, code: ErrorCode, message: String) {
    ctx.shared.metrics.error(code);
    let _ = send.write_all(&encode(id, &ResponseBody::error(code, message))).await;
    finish(send).await;
}

async fn finish(mut send: quinn::SendStream) {
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

/// Reads the engine's feed and encodes frames until told to stop, the subscriber goes away, or it
/// falls more than `limit` events behind.
fn feed_thread(
    mut feed: Feed,
    id: u64,
    filter: FeedFilter,
    limit: usize,
    bridge: Arc<Bridge>,
    tx: mpsc::UnboundedSender<FeedMsg>,
) {
    let mut last_sent = Instant::now();
    let mut reported = feed.next_seq().saturating_sub(1);
    while !bridge.stop.load(Ordering::Acquire) && !tx.is_closed() {
        let batch = match feed.next_batch(FEED_BATCH_MAX.min(limit), FEED_POLL) {
            Ok(b) => b,
            Err(e) => {
                let body = match e {
                    FeedError::Truncated { oldest_available, .. } => ResponseBody::FeedTruncated { oldest_available },
                    other => ResponseBody::error(ErrorCode::FeedUnavailable, other.to_string()),
                };
                let _ = tx.send(FeedMsg::Last(encode(id, &body)));
                return;
            }
        };
        let through = feed.next_seq().saturating_sub(1);
        let mut events: Vec<FeedEvent> = batch
            .into_iter()
            .filter(|e| filter == FeedFilter::All || !e.record.effects.alerts.is_empty())
            .map(|e| FeedEvent {
                seq: e.seq,
                shard: e.shard,
                recorded_at: e.record.recorded_at,
                movement: e.record.movement,
                outcome: e.record.outcome,
                effects: e.record.effects,
            })
            .collect();
        if events.is_empty() && (through == reported || last_sent.elapsed() < PROGRESS_INTERVAL) {
            continue;
        }
        if bridge.buffered_events.load(Ordering::Acquire) + events.len() > limit {
            bridge.too_slow.store(true, Ordering::Release);
            bridge.slow.notify_one();
            return;
        }
        // Frames of about CHUNK_BYTES_TARGET each; all but the last end at their last event.
        loop {
            let mut size = 0;
            let take = events
                .iter()
                .position(|e| {
                    size += approx_size(e);
                    size > CHUNK_BYTES_TARGET
                })
                .map_or(events.len(), |i| i.max(1));
            let rest = events.split_off(take);
            let frame_through = if rest.is_empty() { through } else { events.last().map_or(through, |e| e.seq) };
            let n = events.len();
            let frame = encode(id, &ResponseBody::Feed { through_seq: frame_through, events });
            bridge.buffered_events.fetch_add(n, Ordering::AcqRel);
            if tx.send(FeedMsg::Frame(frame, n)).is_err() {
                return;
            }
            events = rest;
            if events.is_empty() {
                break;
            }
        }
        reported = through;
        last_sent = Instant::now();
    }
}

/// An upper estimate of an event's encoded size.
fn approx_size(e: &FeedEvent) -> usize {
    let lines = match &e.movement.kind {
        crate::core::MovementKind::Reserve { lines, .. } => lines.len() * 120,
        _ => 0,
    };
    200 + lines + e.effects.levels.len() * 160 + e.effects.alerts.len() * 130 + e.effects.holds_closed.len() * 10
}

/// Answers a snapshot request: every level as of one sequence number, in chunks.
pub(super) async fn snapshot(ctx: &Arc<ConnCtx>, tx: &Tx, id: u64, started: Instant) {
    let engine = ctx.shared.engine.clone();
    let (seq, mut levels) = match tokio::task::spawn_blocking(move || engine.levels_snapshot()).await {
        Ok(s) => s,
        Err(e) => return ctx.reply_error(tx, id, ErrorCode::Internal, e.to_string()),
    };
    const PER_CHUNK: usize = CHUNK_BYTES_TARGET / 256;
    while levels.len() > PER_CHUNK {
        let rest = levels.split_off(PER_CHUNK);
        let _ = tx.send(encode(id, &ResponseBody::Snapshot { seq, levels, last: false }));
        levels = rest;
    }
    ctx.reply(tx, id, &ResponseBody::Snapshot { seq, levels, last: true }, started);
}
