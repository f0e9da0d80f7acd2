//! The Perpetua engine over QUIC, through `engine::client`: steps become movements with
//! idempotency keys, alerts come from the change feed, and the feed also proves that no online
//! take left `available` below zero.

use super::{unit_price, Target, TargetError, TargetInfo};
use crate::step::{Step, StepBody, StepOutcome};
use crate::verify::{HistoryCheck, LevelState, EXAMPLES_MAX};
use crate::workload::{Catalogue, LevelIx};
use engine::client::{Client, ClientConfig, ClientError};
use engine::core::Units;
use engine::core::{AlertKind, Line, Movement, MovementKind, ReturnCondition, Settings};
use engine::protocol::FeedFilter;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Movements per request while seeding.
const SEED_BATCH: usize = 2000;
/// Seeding requests in flight at once.
const SEED_IN_FLIGHT: usize = 8;
/// How long the feed check waits for a batch of events before giving up.
const FEED_WAIT: Duration = Duration::from_secs(20);

/// The engine, with one client (QUIC connection) per `--connections`.
#[derive(Clone)]
pub struct Perpetua {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    clients: Vec<Client>,
    catalogue: Arc<Catalogue>,
    /// Unique per run: with a step's id, the idempotency key.
    key_tag: String,
    keys: bool,
    server: String,
}

fn err(e: ClientError) -> TargetError {
    let kind = match &e {
        ClientError::Refused { code, .. } => code.clone(),
        ClientError::Timeout(_) => "timeout".into(),
        ClientError::ConnectionLost(_) => "connection_lost".into(),
        ClientError::Connect { .. } => "connect".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Config(_) => "config".into(),
        ClientError::FeedTruncated { .. } => "feed_truncated".into(),
    };
    TargetError::new(kind, e.to_string())
}

impl Perpetua {
    /// Opens `connections` connections with `config`. `keys`: give every movement an
    /// idempotency key (as a real checkout does; needed to settle in-doubt steps).
    pub async fn connect(
        config: ClientConfig,
        connections: usize,
        catalogue: Arc<Catalogue>,
        keys: bool,
    ) -> Result<Perpetua, TargetError> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            clients.push(Client::connect(config.clone()).await.map_err(err)?);
        }
        let welcome = clients[0].welcome();
        let key_tag = engine::client::new_key()[..12].to_string();
        let server = welcome.server.clone();
        Ok(Perpetua { inner: Arc::new(Inner { config, clients, catalogue, key_tag, keys, server }) })
    }

    /// The movement a step is, always the same bytes for the same step (so a resend is a retry).
    pub fn movement(&self, step: &Step) -> Movement {
        let cat = &self.inner.catalogue;
        let sku = |l: LevelIx| cat.sku_name(l).to_string();
        let loc = |l: LevelIx| cat.location_name(l).to_string();
        let (channel, reference, kind) = match &step.body {
            StepBody::Reserve { lines, expires_at_ms, .. } => (
                "web",
                None,
                MovementKind::Reserve {
                    hold: 0,
                    lines: lines
                        .iter()
                        .map(|&(l, qty)| Line {
                            sku: sku(l),
                            location: loc(l),
                            qty,
                            unit_price: Some(unit_price(cat.sku_of(l))),
                            kit: None,
                            units: Units::ANY,
                        })
                        .collect(),
                    expires_at: *expires_at_ms,
                },
            ),
            StepBody::Commit { hold, .. } => ("web", None, MovementKind::Commit { hold: *hold }),
            StepBody::Release { hold, .. } => ("web", None, MovementKind::Release { hold: *hold }),
            StepBody::SellPos { level, qty } => (
                "pos",
                None,
                MovementKind::Sell {
                    sku: sku(*level),
                    location: loc(*level),
                    qty: *qty,
                    unit_price: Some(unit_price(cat.sku_of(*level))),
                    hold: None,
                    allow_negative: true,
                    units: Units::ANY,
                },
            ),
            StepBody::Return { level, qty, damaged } => (
                "web",
                None,
                MovementKind::Return {
                    sku: sku(*level),
                    location: loc(*level),
                    qty: *qty,
                    condition: if *damaged { ReturnCondition::Damaged } else { ReturnCondition::Restock },
                    unit_price: Some(unit_price(cat.sku_of(*level))),
                    units: Units::ANY,
                },
            ),
            StepBody::Receive { level, qty } => (
                "erp",
                Some(format!("PO-{}", step.id)),
                MovementKind::Receive {
                    sku: sku(*level),
                    location: loc(*level),
                    qty: *qty,
                    unit_cost: Some(unit_price(cat.sku_of(*level)) / 2),
                    units: Units::ANY,
                },
            ),
            StepBody::Count { level, counted } => (
                "warehouse",
                None,
                MovementKind::Count { sku: sku(*level), location: loc(*level), counted: *counted, units: Units::ANY },
            ),
            StepBody::Transfer { from, to, qty } => (
                "warehouse",
                None,
                MovementKind::Transfer {
                    sku: sku(*from),
                    from: loc(*from),
                    to: loc(*to),
                    qty: *qty,
                    units: Units::ANY,
                },
            ),
        };
        Movement {
            key: self.inner.keys.then(|| format!("{}-{:x}", self.inner.key_tag, step.id)),
            channel: channel.into(),
            reference,
            occurred_at: None,
            kind,
        }
    }

    async fn feed_client(&self) -> Result<Client, TargetError> {
        Client::connect(self.inner.config.clone()).await.map_err(err)
    }
}

impl Target for Perpetua {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            kind: "perpetua".into(),
            address: self.inner.config.server.clone(),
            server: self.inner.server.clone(),
            durability: "stockd --fsync as configured (see log syncs below)".into(),
            durable: true,
            idempotent: self.inner.keys,
            logic: format!(
                "engine movements over QUIC{}",
                if self.inner.keys { ", each with an idempotency key" } else { ", without idempotency keys" }
            ),
        }
    }

    fn connections(&self) -> usize {
        self.inner.clients.len()
    }

    async fn seed(&self, catalogue: Arc<Catalogue>) -> Result<(), TargetError> {
        let n = catalogue.level_count();
        let started = Instant::now();
        let mut batches = Vec::new();
        let mut batch = Vec::with_capacity(SEED_BATCH);
        for l in 0..n as LevelIx {
            let s = catalogue.seed(l);
            let (sku, location) = (catalogue.sku_name(l).to_string(), catalogue.location_name(l).to_string());
            batch.push(Movement {
                key: None,
                channel: "loadgen".into(),
                reference: Some("seed".into()),
                occurred_at: None,
                kind: MovementKind::Count {
                    sku: sku.clone(),
                    location: location.clone(),
                    counted: s.stock,
                    units: Units::ANY,
                },
            });
            batch.push(Movement {
                key: None,
                channel: "admin".into(),
                reference: None,
                occurred_at: None,
                kind: MovementKind::SetSettings {
                    sku,
                    location,
                    settings: Settings {
                        reorder_point: Some(s.reorder_point),
                        reorder_qty: Some(s.reorder_qty),
                        max_qty: None,
                        safety_stock: 0,
                        lead_time_days: 2,
                    },
                },
            });
            if batch.len() >= SEED_BATCH {
                batches.push(std::mem::replace(&mut batch, Vec::with_capacity(SEED_BATCH)));
            }
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let clients = &self.inner.clients;
        let total = batches.len();
        let mut done = 0;
        let mut line = crate::stats::ProgressLine::default();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut it = batches.into_iter().enumerate();
        loop {
            while pending.len() < SEED_IN_FLIGHT {
                let Some((i, b)) = it.next() else { break };
                let client = clients[i % clients.len()].clone();
                pending.push(async move { (client.submit(&b).await, b) });
            }
            let Some((result, b)) = futures_util::StreamExt::next(&mut pending).await else { break };
            let outcomes = result.map_err(err)?;
            if let Some((m, o)) = b.iter().zip(&outcomes).find(|(_, o)| o.outcome.is_err()) {
                return Err(TargetError::new(
                    "seed",
                    format!("the engine refused a seeding movement {:?}: {:?}", m.kind, o.outcome),
                ));
            }
            done += 1;
            let secs = started.elapsed().as_secs_f64();
            line.show(
                &format!("seeding: {done}/{total} requests of {SEED_BATCH} movements ({secs:.1} s)"),
                done == total,
            );
        }
        Ok(())
    }

    async fn submit<'a>(&'a self, conn: usize, steps: &'a [Step]) -> Result<Vec<StepOutcome>, TargetError> {
        let movements: Vec<Movement> = steps.iter().map(|s| self.movement(s)).collect();
        let client = &self.inner.clients[conn % self.inner.clients.len()];
        let outcomes = client.submit(&movements).await.map_err(err)?;
        Ok(outcomes.into_iter().map(|o| StepOutcome::of(o.outcome)).collect())
    }

    async fn read_levels(&self, catalogue: Arc<Catalogue>) -> Result<Vec<Option<LevelState>>, TargetError> {
        let levels = self.inner.clients[0].levels(None).await.map_err(err)?;
        let mut out = vec![None; catalogue.level_count()];
        for l in levels {
            if let Some(ix) = catalogue.find(&l.sku, &l.location) {
                out[ix as usize] = Some(LevelState {
                    on_hand: l.on_hand,
                    reserved: l.reserved,
                    unsellable: l.unsellable,
                    available: l.available,
                });
            }
        }
        Ok(out)
    }

    async fn position(&self) -> Result<u64, TargetError> {
        Ok(self.inner.clients[0].status().await.map_err(err)?.durable_seq)
    }

    async fn watch_alerts(
        &self,
        catalogue: Arc<Catalogue>,
        from: u64,
        alerts: UnboundedSender<LevelIx>,
    ) -> Result<(), TargetError> {
        let client = self.feed_client().await?;
        let mut sub = client.subscribe(from + 1, FeedFilter::AlertsOnly).await.map_err(err)?;
        tokio::spawn(async move {
            loop {
                let batch = match sub.next().await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "the alert feed ended; no more receipts will follow reorder alerts");
                        return;
                    }
                };
                for event in batch.events {
                    for a in event.effects.alerts {
                        if a.kind == AlertKind::Reorder {
                            if let Some(l) = catalogue.find(&a.sku, &a.location) {
                                if alerts.send(l).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(())
    }

    async fn check_history(&self, from: u64, records_max: u64) -> Result<Option<HistoryCheck>, TargetError> {
        let client = self.feed_client().await?;
        let end = client.status().await.map_err(err)?.durable_seq;
        let mut check = HistoryCheck { source: "change feed".into(), complete: true, ..HistoryCheck::default() };
        if end <= from {
            return Ok(Some(check));
        }
        let mut sub = client.subscribe(from + 1, FeedFilter::All).await.map_err(err)?;
        let mut read = 0u64;
        let started = Instant::now();
        let mut line = crate::stats::ProgressLine::default();
        'feed: loop {
            let batch = match tokio::time::timeout(FEED_WAIT, sub.next()).await {
                Ok(b) => b.map_err(err)?,
                Err(_) => {
                    check.complete = false;
                    break;
                }
            };
            for e in batch.events {
                if e.seq > end {
                    break 'feed;
                }
                read += 1;
                let taken: Vec<(&str, &str)> = match (&e.movement.kind, &e.outcome) {
                    (MovementKind::Reserve { lines, .. }, Ok(_)) => {
                        lines.iter().map(|l| (l.sku.as_str(), l.location.as_str())).collect()
                    }
                    (MovementKind::Transfer { sku, from, .. }, Ok(_)) => vec![(sku.as_str(), from.as_str())],
                    (MovementKind::Sell { sku, location, hold: None, allow_negative: false, .. }, Ok(_)) => {
                        vec![(sku.as_str(), location.as_str())]
                    }
                    _ => Vec::new(),
                };
                if !taken.is_empty() {
                    check.takes_checked += 1;
                    for lv in
                        e.effects.levels.iter().filter(|lv| taken.contains(&(lv.sku.as_str(), lv.location.as_str())))
                    {
                        if lv.available < 0 {
                            check.violations += 1;
                            if check.examples.len() < EXAMPLES_MAX {
                                check.examples.push(format!(
                                    "seq {}: {} at ({}, {}) left available = {}",
                                    e.seq,
                                    e.movement.kind.name(),
                                    lv.sku,
                                    lv.location,
                                    lv.available
                                ));
                            }
                        }
                    }
                }
                if read >= records_max {
                    check.complete = false;
                    break 'feed;
                }
            }
            if batch.through_seq >= end {
                break;
            }
            let secs = started.elapsed().as_secs_f64();
            line.show(&format!("checking the change feed: {read} of {} records ({secs:.1} s)", end - from), false);
        }
        let secs = started.elapsed().as_secs_f64();
        line.show(&format!("checked the change feed: {read} records ({secs:.1} s)"), true);
        client.close();
        Ok(Some(check))
    }

    async fn sync_counters(&self) -> Option<(u64, u64)> {
        let status = self.inner.clients[0].status().await.ok()?;
        Some((status.durable_seq, status.log_syncs))
    }
}
