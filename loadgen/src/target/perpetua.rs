//! The Perpetua engine over QUIC, through `engine::client`: steps become movements with
//! idempotency keys, alerts come from the change feed, and the feed also proves that no online
//! take left `available` below zero.

use super::{unit_price, Target, TargetError, TargetInfo};
use crate::complex::Plan;
use crate::step::{Step, StepBody, StepOutcome};
use crate::verify::book::UnitsBook;
use crate::verify::units::{AllocEvent, ReadError, UnitsReads};
use crate::verify::{HistoryCheck, LevelState, EXAMPLES_MAX};
use crate::workload::{Catalogue, LevelIx};
use engine::client::{Client, ClientConfig, ClientError};
use engine::core::{AdjustReason, Component, LevelDetail, Qty, SerialView, SkuSettings, Units};
use engine::core::{AlertKind, Line, Movement, MovementKind, ReturnCondition, Settings};
use engine::protocol::FeedFilter;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Movements per request while seeding.
const SEED_BATCH: usize = 2000;
/// Seeding requests in flight at once.
const SEED_IN_FLIGHT: usize = 8;
/// Seeding calls of one movement (SKU settings, allocations) in flight at once.
const SEED_CALLS_IN_FLIGHT: usize = 64;
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
    /// Complex inventory: the plan (what to seed, how steps name units) and the book (which
    /// serials the seeding brings).
    units: Option<(Arc<Plan>, Arc<UnitsBook>)>,
    /// The reads of lots, serials and allocations.
    reads: Arc<dyn UnitsReads>,
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
        Perpetua::connect_with_units(config, connections, catalogue, keys, None).await
    }

    /// [`Perpetua::connect`] with complex inventory: `units` is the plan (what to seed, how steps
    /// name lots, serials, kits and channels) and the book (which serials the seeding brings).
    pub async fn connect_with_units(
        config: ClientConfig,
        connections: usize,
        catalogue: Arc<Catalogue>,
        keys: bool,
        units: Option<(Arc<Plan>, Arc<UnitsBook>)>,
    ) -> Result<Perpetua, TargetError> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            clients.push(Client::connect(config.clone()).await.map_err(err)?);
        }
        let welcome = clients[0].welcome();
        let key_tag = engine::client::new_key()[..12].to_string();
        let server = welcome.server.clone();
        let reads: Arc<dyn UnitsReads> = Arc::new(ClientReads(clients[0].clone()));
        Ok(Perpetua { inner: Arc::new(Inner { config, clients, catalogue, key_tag, keys, server, units, reads }) })
    }

    /// The movement a step is, always the same bytes for the same step (so a resend is a retry).
    pub fn movement(&self, step: &Step) -> Movement {
        let cat = &self.inner.catalogue;
        let sku = |l: LevelIx| cat.sku_name(l).to_string();
        let loc = |l: LevelIx| cat.location_name(l).to_string();
        let units = |i: usize| step.units(i).clone();
        let online = match (step.extra.as_ref().and_then(|x| x.channel), &self.inner.units) {
            (Some(c), Some((plan, _))) => plan.channel_name(Some(c)),
            _ => "web",
        };
        let kit = step.extra.as_ref().and_then(|x| x.kit);
        let (channel, reference, kind) = match &step.body {
            StepBody::Reserve { expires_at_ms, .. } if kit.is_some() => {
                let (k, location, kits) = kit.expect("a kit");
                let plan = &self.inner.units.as_ref().expect("kits come with a plan").0;
                let line = Line {
                    sku: plan.kits[k as usize].sku.clone(),
                    location: cat.locations[location as usize].clone(),
                    qty: kits,
                    unit_price: None,
                    kit: None,
                    units: Units::ANY,
                };
                (online, None, MovementKind::Reserve { hold: 0, lines: vec![line], expires_at: *expires_at_ms })
            }
            StepBody::Reserve { lines, expires_at_ms, .. } => (
                online,
                None,
                MovementKind::Reserve {
                    hold: 0,
                    lines: lines
                        .iter()
                        .enumerate()
                        .map(|(i, &(l, qty))| Line {
                            sku: sku(l),
                            location: loc(l),
                            qty,
                            unit_price: Some(unit_price(cat.sku_of(l))),
                            kit: None,
                            units: units(i),
                        })
                        .collect(),
                    expires_at: *expires_at_ms,
                },
            ),
            StepBody::Commit { hold, .. } => (online, None, MovementKind::Commit { hold: *hold }),
            StepBody::Release { hold, .. } => (online, None, MovementKind::Release { hold: *hold }),
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
                    units: units(0),
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
                    units: units(0),
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
                    units: units(0),
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
                MovementKind::Transfer { sku: sku(*from), from: loc(*from), to: loc(*to), qty: *qty, units: units(0) },
            ),
            StepBody::Adjust { level, delta } => (
                "warehouse",
                None,
                MovementKind::Adjust {
                    sku: sku(*level),
                    location: loc(*level),
                    delta: *delta,
                    reason: if *delta > 0 { AdjustReason::Found } else { AdjustReason::Correction },
                    allow_negative: false,
                    units: units(0),
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

    /// Sends seeding movements in requests of [`SEED_BATCH`], [`SEED_IN_FLIGHT`] at a time; any
    /// refusal is an error. Shows progress as `what`.
    async fn send_all(&self, what: &str, movements: Vec<Movement>) -> Result<(), TargetError> {
        let started = Instant::now();
        let batches: Vec<Vec<Movement>> = movements.chunks(SEED_BATCH).map(<[Movement]>::to_vec).collect();
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
                &format!("{what}: {done}/{total} requests of {SEED_BATCH} movements ({secs:.1} s)"),
                done == total,
            );
        }
        Ok(())
    }

    /// Makes one call per job (set_sku_settings, allocate), [`SEED_CALLS_IN_FLIGHT`] at a time
    /// over the connections; any refusal is an error naming the job (and giving `hint`). Shows
    /// progress as `what`.
    async fn call_each<J, F, Fut>(&self, what: &str, hint: &str, jobs: Vec<J>, call: F) -> Result<(), TargetError>
    where
        F: Fn(Client, J) -> Fut,
        Fut: std::future::Future<Output = (Result<engine::protocol::MovementOutcome, ClientError>, String)>,
    {
        let started = Instant::now();
        let total = jobs.len();
        let clients = &self.inner.clients;
        let mut line = crate::stats::ProgressLine::default();
        let mut answers = futures_util::stream::iter(jobs.into_iter().enumerate())
            .map(|(i, job)| call(clients[i % clients.len()].clone(), job))
            .buffer_unordered(SEED_CALLS_IN_FLIGHT);
        let mut done = 0;
        while let Some((answer, job)) = answers.next().await {
            let outcome = answer.map_err(err)?;
            if let Err(reason) = outcome.outcome {
                let hint = if hint.is_empty() { String::new() } else { format!(" ({hint})") };
                return Err(TargetError::new("seed", format!("the engine refused {job}: {reason}{hint}")));
            }
            done += 1;
            let secs = started.elapsed().as_secs_f64();
            line.show(&format!("{what}: {done}/{total} ({secs:.1} s)"), done == total);
        }
        Ok(())
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
        let units = self.inner.units.as_ref();
        let movement = |channel: &str, reference: Option<&str>, kind: MovementKind| Movement {
            key: None,
            channel: channel.into(),
            reference: reference.map(Into::into),
            occurred_at: None,
            kind,
        };
        // Complex inventory first: serial tracking must be set while the SKU has no stock, and
        // kits before anything sells them.
        if let Some((plan, _)) = units {
            let mut settings = Vec::new();
            for s in (0..catalogue.config.skus).filter(|&s| plan.is_serial(s)) {
                let tracked = SkuSettings { serial_tracked: true, ..SkuSettings::default() };
                settings.push((catalogue.skus[s as usize].clone(), tracked));
            }
            for kit in &plan.kits {
                let components = kit
                    .components
                    .iter()
                    .map(|&(c, qty)| Component { sku: catalogue.skus[c as usize].clone(), qty })
                    .collect();
                settings.push((kit.sku.clone(), SkuSettings { components, ..SkuSettings::default() }));
            }
            let hint = "serial tracking can be switched only on a SKU with no stock, and a SKU with stock cannot \
                        become a kit: run on a fresh engine (a new data directory), or with the --seed and \
                        --sku-prefix of the run that seeded this one";
            self.call_each("SKU settings", hint, settings, |client, (sku, settings)| async move {
                let what = format!("set_sku_settings of {sku} to {settings:?}");
                (client.set_sku_settings(&sku, settings).await, what)
            })
            .await?;
        }
        let mut all = Vec::with_capacity(2 * n);
        for l in 0..n as LevelIx {
            let s = catalogue.seed(l);
            let (sku, location) = (catalogue.sku_name(l).to_string(), catalogue.location_name(l).to_string());
            let receive = |qty: Qty, units: Units| {
                let (sku, location) = (sku.clone(), location.clone());
                movement("loadgen", Some("seed"), MovementKind::Receive { sku, location, qty, unit_cost: None, units })
            };
            match units {
                Some((plan, book)) if plan.is_serial(catalogue.sku_of(l)) => {
                    all.push(receive(s.stock, Units::serials(&book.seed_serials(l, s.stock))));
                }
                Some((plan, _)) if plan.has_lots(catalogue.sku_of(l)) => {
                    for (k, qty) in plan.lot_split(s.stock) {
                        let (code, expires_at) = plan.seeded_lot(k);
                        all.push(receive(qty, Units::new_lot(&code, expires_at)));
                    }
                }
                _ => all.push(movement(
                    "loadgen",
                    Some("seed"),
                    MovementKind::Count {
                        sku: sku.clone(),
                        location: location.clone(),
                        counted: s.stock,
                        units: Units::ANY,
                    },
                )),
            }
            all.push(movement(
                "admin",
                None,
                MovementKind::SetSettings {
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
            ));
        }
        self.send_all("seeding", all).await?;
        if let Some((plan, _)) = units {
            let mut allocate = Vec::new();
            for (&l, allocs) in plan.allocations() {
                for &(c, qty) in allocs {
                    allocate.push((l, plan.channel_name(Some(c)).to_string(), qty));
                }
            }
            let cat = &catalogue;
            self.call_each("allocations", "", allocate, |client, (l, channel, qty)| async move {
                let (sku, location) = (cat.sku_name(l), cat.location_name(l));
                let what = format!("allocate {qty} of ({sku}, {location}) to {channel}");
                (client.allocate(sku, location, &channel, qty).await, what)
            })
            .await?;
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
        // A long run outlives the log's retention: check what is still kept.
        let mut sub = match client.subscribe(from + 1, FeedFilter::All).await {
            Err(ClientError::FeedTruncated { oldest_available }) => {
                check.complete = false;
                client.subscribe(oldest_available, FeedFilter::All).await.map_err(err)?
            }
            r => r.map_err(err)?,
        };
        let mut read = 0u64;
        // Complex inventory: the channel sales at the allocated levels, for the replay.
        let allocated = self.inner.units.as_ref().map(|u| &u.0).filter(|p| !p.allocations().is_empty());
        let mut holds_seen = std::collections::HashSet::new();
        let started = Instant::now();
        let mut line = crate::stats::ProgressLine::default();
        'feed: loop {
            let batch = match tokio::time::timeout(FEED_WAIT, sub.next()).await {
                Ok(Err(ClientError::FeedTruncated { .. })) => {
                    check.complete = false;
                    break;
                }
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
                if let Some(plan) = allocated {
                    allocation_events(&e, &self.inner.catalogue, plan, &mut holds_seen, &mut check.allocation_events);
                }
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

    fn units_reads(&self) -> Option<Arc<dyn UnitsReads>> {
        Some(self.inner.reads.clone())
    }
}

/// The facts of one feed event that the replay of allocations needs ([`AllocEvent`]): channel
/// sales at the allocated levels, the ends of the holds that made them, allocations set.
fn allocation_events(
    e: &engine::protocol::FeedEvent,
    catalogue: &Catalogue,
    plan: &Plan,
    holds_seen: &mut std::collections::HashSet<u64>,
    out: &mut Vec<AllocEvent>,
) {
    if e.outcome.is_err() {
        return;
    }
    let level_of =
        |sku: &str, location: &str| catalogue.find(sku, location).filter(|l| plan.allocations().contains_key(l));
    let after = |sku: &str, location: &str| {
        e.effects.levels.iter().find(|v| v.sku == sku && v.location == location).map(|v| v.available)
    };
    let mut take = |sku: &str, location: &str, qty: Qty, hold: Option<u64>| {
        if let (Some(level), Some(available_after)) = (level_of(sku, location), after(sku, location)) {
            if let Some(h) = hold {
                holds_seen.insert(h);
            }
            let channel = e.movement.channel.clone();
            out.push(AllocEvent::Take { seq: e.seq, level, channel, qty, hold, available_after });
        }
    };
    match &e.movement.kind {
        MovementKind::Reserve { hold, lines, .. } => {
            for l in lines {
                take(&l.sku, &l.location, l.qty, Some(*hold));
            }
        }
        MovementKind::Sell { sku, location, qty, hold: None, allow_negative: false, .. } => {
            take(sku, location, *qty, None)
        }
        MovementKind::Commit { hold } | MovementKind::CompleteCommit { hold } if holds_seen.contains(hold) => {
            out.push(AllocEvent::HoldClosed { hold: *hold, sold: true })
        }
        MovementKind::Release { hold } if holds_seen.contains(hold) => {
            out.push(AllocEvent::HoldClosed { hold: *hold, sold: false })
        }
        MovementKind::Expire { .. } => {
            for h in e.effects.holds_closed.iter().filter(|h| holds_seen.contains(h)) {
                out.push(AllocEvent::HoldClosed { hold: *h, sold: false });
            }
        }
        MovementKind::Allocate { sku, location, channel, qty } => {
            if let Some(level) = level_of(sku, location) {
                out.push(AllocEvent::Set { level, channel: channel.clone(), qty: *qty });
            }
        }
        _ => {}
    }
}

/// The engine client's reads of lots, serial numbers and allocations.
pub struct ClientReads(pub Client);

impl UnitsReads for ClientReads {
    fn level_detail<'a>(
        &'a self,
        sku: &'a str,
        location: &'a str,
    ) -> BoxFuture<'a, Result<Option<LevelDetail>, ReadError>> {
        Box::pin(async move { self.0.level_detail(sku, location).await.map_err(read_err) })
    }

    fn serial<'a>(&'a self, sku: &'a str, serial: &'a str) -> BoxFuture<'a, Result<Option<SerialView>, ReadError>> {
        Box::pin(async move { self.0.serial(sku, serial).await.map_err(read_err) })
    }

    fn sku_settings<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<SkuSettings, ReadError>> {
        Box::pin(async move { self.0.sku_settings(sku).await.map_err(read_err) })
    }

    fn available_for<'a>(
        &'a self,
        sku: &'a str,
        location: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<Qty>, ReadError>> {
        Box::pin(async move { self.0.available_for(sku, location, channel).await.map_err(read_err) })
    }
}

/// A failed read as the check reports it.
fn read_err(e: ClientError) -> ReadError {
    ReadError { unsupported: false, message: e.to_string() }
}
