//! The change feed and snapshots (wired once the engine exposes its feed).

use super::conn::{ConnCtx, Tx};
use crate::protocol::stream::FrameReader;
use crate::protocol::*;
use std::sync::Arc;
use std::time::Instant;

pub(super) async fn serve(
    ctx: Arc<ConnCtx>,
    id: u64,
    _from_seq: u64,
    _filter: FeedFilter,
    mut send: quinn::SendStream,
    _reader: FrameReader,
) {
    let mut buf = Vec::new();
    encode_response(&mut buf, id, &ResponseBody::error(ErrorCode::FeedUnavailable, "not yet"));
    let _ = send.write_all(&buf).await;
    let _ = send.finish();
    drop(ctx);
}

pub(super) async fn snapshot(ctx: &Arc<ConnCtx>, tx: &Tx, id: u64, _started: Instant) {
    ctx.reply_error(tx, id, ErrorCode::FeedUnavailable, "not yet".into());
}
