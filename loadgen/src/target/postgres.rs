//! PostgreSQL as a relational stock table: one row per level, and the same rules in SQL. Every
//! request is one call of a PL/pgSQL function, so one transaction and one round trip: single
//! checks are the classic `UPDATE ... WHERE available >= n`, multi-line holds are all or none,
//! and a request that touches several rows locks them first in one order so that concurrent
//! requests cannot deadlock. No idempotency keys: what a merchant's SQL typically does.
//!
//! The load generator owns the tables `lg_levels` and `lg_holds` and the functions `lg_change`
//! and `lg_apply`; seeding empties and refills them.

use super::{redact, Target, TargetError, TargetInfo};
use crate::step::{Step, StepBody, StepOutcome};
use crate::verify::{HistoryCheck, LevelState};
use crate::workload::{Catalogue, LevelIx};
use engine::core::{Detail, Reason};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::{Client, NoTls, Statement};

/// Rows per insert while seeding.
const CHUNK: usize = 10_000;
/// Attempts of a request that PostgreSQL aborted as a deadlock or serialisation failure (its
/// effects were rolled back, so trying again is safe).
const ATTEMPTS_MAX: u32 = 5;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS lg_levels (
  sku text NOT NULL,
  location text NOT NULL,
  on_hand bigint NOT NULL,
  reserved bigint NOT NULL DEFAULT 0,
  unsellable bigint NOT NULL DEFAULT 0,
  safety_stock bigint NOT NULL DEFAULT 0,
  reorder_point bigint,
  reorder_qty bigint,
  alerted boolean NOT NULL DEFAULT false,
  PRIMARY KEY (sku, location)
) WITH (fillfactor = 80);
CREATE TABLE IF NOT EXISTS lg_holds (
  id bigint PRIMARY KEY,
  expires_at bigint NOT NULL,
  skus text[] NOT NULL,
  locs text[] NOT NULL,
  qtys bigint[] NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS lg_hold_seq;

-- Changes one level by deltas; with `need`, only if available >= need. Applies the engine's
-- reorder-alert rule (raised once at or below the reorder point, re-armed above it).
CREATE OR REPLACE FUNCTION lg_change(p_sku text, p_loc text, d_oh bigint, d_r bigint, d_u bigint, need bigint,
    OUT ok boolean, OUT avail bigint, OUT raised boolean) LANGUAGE plpgsql AS $$
DECLARE
  lv lg_levels%ROWTYPE;
  a bigint;
  al boolean;
BEGIN
  raised := false;
  SELECT * INTO lv FROM lg_levels WHERE sku = p_sku AND location = p_loc FOR UPDATE;
  IF NOT FOUND THEN ok := false; RETURN; END IF;
  a := lv.on_hand - lv.reserved - lv.unsellable - lv.safety_stock;
  IF need IS NOT NULL AND a < need THEN ok := false; avail := a; RETURN; END IF;
  avail := a + d_oh - d_r - d_u;
  al := lv.alerted;
  IF lv.reorder_point IS NOT NULL THEN
    IF avail <= lv.reorder_point THEN
      IF NOT al THEN al := true; raised := true; END IF;
    ELSE
      al := false;
    END IF;
  END IF;
  UPDATE lg_levels SET on_hand = on_hand + d_oh, reserved = reserved + d_r, unsellable = unsellable + d_u,
    alerted = al WHERE sku = p_sku AND location = p_loc;
  ok := true;
END $$;

-- One request: movements m (kind 0 reserve, 1 commit, 2 release, 3 add, 4 count, 5 transfer)
-- with their lines l (l_mv = movement number, 1-based, in order). Codes as the engine's
-- reasons: 0 accepted, 1 insufficient_stock, 2 unknown_hold, 3 hold_expired.
CREATE OR REPLACE FUNCTION lg_apply(m_kind smallint[], m_hold bigint[], m_exp bigint, now_ms bigint,
    lock_first boolean, l_mv int[], l_sku text[], l_loc text[], l_loc2 text[], l_qty bigint[])
  RETURNS TABLE(code smallint, detail bigint, avail bigint, alerts int) LANGUAGE plpgsql AS $$
DECLARE
  n int := coalesce(array_length(m_kind, 1), 0);
  nl int := coalesce(array_length(l_mv, 1), 0);
  i int; j int := 1; lo int; hi int; x int; k smallint;
  r record; h record; ok boolean; a bigint; hid bigint; old bigint;
BEGIN
  IF lock_first THEN
    PERFORM 1 FROM lg_levels lv
      WHERE (lv.sku, lv.location) IN (
        SELECT t.s, t.l FROM unnest(l_sku, l_loc) AS t(s, l)
        UNION SELECT t.s, t.l FROM unnest(l_sku, l_loc2) AS t(s, l) WHERE t.l IS NOT NULL)
      ORDER BY lv.sku, lv.location FOR UPDATE;
  END IF;
  FOR i IN 1..n LOOP
    lo := j;
    WHILE j <= nl AND l_mv[j] = i LOOP j := j + 1; END LOOP;
    hi := j - 1;
    k := m_kind[i]; code := 0; detail := 0; avail := NULL; alerts := 0;
    IF k = 0 THEN
      ok := true;
      FOR x IN lo..hi LOOP
        SELECT lv.on_hand - lv.reserved - lv.unsellable - lv.safety_stock INTO a FROM lg_levels lv
          WHERE lv.sku = l_sku[x] AND lv.location = l_loc[x] FOR UPDATE;
        IF NOT FOUND OR a < l_qty[x] THEN ok := false; EXIT; END IF;
      END LOOP;
      IF ok THEN
        hid := nextval('lg_hold_seq');
        FOR x IN lo..hi LOOP
          r := lg_change(l_sku[x], l_loc[x], 0, l_qty[x], 0, NULL);
          avail := least(avail, r.avail);
          IF r.raised THEN alerts := alerts | (1 << (x - lo)); END IF;
        END LOOP;
        INSERT INTO lg_holds VALUES (hid, m_exp, l_sku[lo:hi], l_loc[lo:hi], l_qty[lo:hi]);
        detail := hid;
      ELSE
        code := 1;
      END IF;
    ELSIF k = 1 OR k = 2 THEN
      SELECT * INTO h FROM lg_holds WHERE id = m_hold[i] FOR UPDATE;
      IF NOT FOUND THEN
        code := 2;
      ELSIF k = 1 AND now_ms >= h.expires_at THEN
        code := 3;
      ELSE
        DELETE FROM lg_holds WHERE id = m_hold[i];
        FOR x IN 1..array_length(h.skus, 1) LOOP
          IF k = 1 THEN
            PERFORM lg_change(h.skus[x], h.locs[x], -h.qtys[x], -h.qtys[x], 0, NULL);
          ELSE
            PERFORM lg_change(h.skus[x], h.locs[x], 0, -h.qtys[x], 0, NULL);
          END IF;
        END LOOP;
      END IF;
    ELSIF k = 3 THEN
      r := lg_change(l_sku[lo], l_loc[lo], l_qty[lo], 0, m_hold[i], NULL);
      IF NOT r.ok THEN code := 1; ELSIF r.raised THEN alerts := 1; END IF;
    ELSIF k = 4 THEN
      SELECT lv.on_hand INTO old FROM lg_levels lv WHERE lv.sku = l_sku[lo] AND lv.location = l_loc[lo] FOR UPDATE;
      IF NOT FOUND THEN
        code := 1;
      ELSE
        r := lg_change(l_sku[lo], l_loc[lo], l_qty[lo] - old, 0, 0, NULL);
        UPDATE lg_levels SET unsellable = l_qty[lo]
          WHERE sku = l_sku[lo] AND location = l_loc[lo] AND unsellable > l_qty[lo];
        detail := l_qty[lo] - old;
        IF r.raised THEN alerts := 1; END IF;
      END IF;
    ELSIF k = 5 THEN
      PERFORM 1 FROM lg_levels lv WHERE lv.sku = l_sku[lo] AND lv.location = l_loc2[lo] FOR UPDATE;
      IF NOT FOUND THEN
        code := 1;
      ELSE
        r := lg_change(l_sku[lo], l_loc[lo], -l_qty[lo], 0, 0, l_qty[lo]);
        IF NOT r.ok THEN
          code := 1;
        ELSE
          avail := r.avail;
          IF r.raised THEN alerts := 1; END IF;
          PERFORM lg_change(l_sku[lo], l_loc2[lo], l_qty[lo], 0, 0, NULL);
        END IF;
      END IF;
    END IF;
    RETURN NEXT;
  END LOOP;
END $$;
"#;

const APPLY: &str = "SELECT code, detail, avail, alerts FROM lg_apply($1::smallint[], $2::bigint[], $3::bigint, \
                     $4::bigint, $5::boolean, $6::int[], $7::text[], $8::text[], $9::text[], $10::bigint[])";

/// PostgreSQL with one session per `--connections`.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Conn {
    client: Client,
    apply: Statement,
}

struct Inner {
    url: String,
    conns: Vec<Conn>,
    catalogue: Arc<Catalogue>,
    server: String,
    synchronous_commit: String,
    fsync: String,
}

fn err(e: tokio_postgres::Error) -> TargetError {
    let kind = match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED => "deadlock".to_string(),
        Some(c) => format!("postgres_{}", c.code()),
        None if e.is_closed() => "connection_lost".to_string(),
        None => "postgres".to_string(),
    };
    let detail = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
    TargetError::new(kind, detail)
}

async fn show(client: &Client, what: &str) -> Result<String, TargetError> {
    let row = client.query_one(&format!("SHOW {what}"), &[]).await.map_err(err)?;
    Ok(row.get(0))
}

impl Postgres {
    /// Opens `connections` sessions. `synchronous_commit`: a value to set in each session
    /// (`on`, `off`...), or `None` to keep the server's.
    pub async fn connect(
        url: &str,
        connections: usize,
        catalogue: Arc<Catalogue>,
        synchronous_commit: Option<&str>,
    ) -> Result<Postgres, TargetError> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
                TargetError::new("connect", format!("cannot connect to {}: {e}; is PostgreSQL running?", redact(url)))
            })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "postgres connection ended");
                }
            });
            if let Some(v) = synchronous_commit {
                client
                    .batch_execute(&format!("SET synchronous_commit = '{}'", v.replace('\'', "")))
                    .await
                    .map_err(err)?;
            }
            clients.push(client);
        }
        let c = &clients[0];
        let server: String = c.query_one("SELECT version()", &[]).await.map_err(err)?.get(0);
        let server = server.split(" on ").next().unwrap_or(&server).to_string();
        let synchronous_commit = show(c, "synchronous_commit").await?;
        let fsync = show(c, "fsync").await?;
        c.batch_execute(SCHEMA).await.map_err(err)?;
        let mut conns = Vec::new();
        for client in clients {
            let apply = client.prepare(APPLY).await.map_err(err)?;
            conns.push(Conn { client, apply });
        }
        Ok(Postgres {
            inner: Arc::new(Inner { url: redact(url), conns, catalogue, server, synchronous_commit, fsync }),
        })
    }
}

/// The arguments of `lg_apply` for a request.
#[derive(Default)]
struct Args<'a> {
    kind: Vec<i16>,
    hold: Vec<i64>,
    l_mv: Vec<i32>,
    l_sku: Vec<&'a str>,
    l_loc: Vec<&'a str>,
    l_loc2: Vec<Option<&'a str>>,
    l_qty: Vec<i64>,
    levels: HashSet<LevelIx>,
}

impl<'a> Args<'a> {
    fn line(&mut self, cat: &'a Catalogue, mv: usize, level: LevelIx, to: Option<LevelIx>, qty: i64) {
        self.l_mv.push(mv as i32 + 1);
        self.l_sku.push(cat.sku_name(level));
        self.l_loc.push(cat.location_name(level));
        self.l_loc2.push(to.map(|t| cat.location_name(t)));
        self.l_qty.push(qty);
        self.levels.insert(level);
        if let Some(t) = to {
            self.levels.insert(t);
        }
    }

    fn step(&mut self, cat: &'a Catalogue, mv: usize, step: &Step) {
        let (kind, hold) = match &step.body {
            StepBody::Reserve { lines, .. } => {
                for &(l, q) in lines {
                    self.line(cat, mv, l, None, q);
                }
                (0, 0)
            }
            // The hold's lines are passed only so that their rows are locked in order.
            StepBody::Commit { hold, lines } | StepBody::Release { hold, lines } => {
                for &(l, q) in lines {
                    self.line(cat, mv, l, None, q);
                }
                (if matches!(step.body, StepBody::Commit { .. }) { 1 } else { 2 }, *hold as i64)
            }
            StepBody::SellPos { level, qty } => {
                self.line(cat, mv, *level, None, -qty);
                (3, 0)
            }
            StepBody::Return { level, qty, damaged } => {
                self.line(cat, mv, *level, None, *qty);
                (3, if *damaged { *qty } else { 0 })
            }
            StepBody::Receive { level, qty } => {
                self.line(cat, mv, *level, None, *qty);
                (3, 0)
            }
            StepBody::Count { level, counted } => {
                self.line(cat, mv, *level, None, *counted);
                (4, 0)
            }
            StepBody::Transfer { from, to, qty } => {
                self.line(cat, mv, *from, Some(*to), *qty);
                (5, 0)
            }
            // Only complex inventory adjusts, and it is refused for this target (see `run`).
            StepBody::Adjust { level, delta } => {
                self.line(cat, mv, *level, None, *delta);
                (3, 0)
            }
        };
        self.kind.push(kind);
        self.hold.push(hold);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Target for Postgres {
    fn info(&self) -> TargetInfo {
        let i = &self.inner;
        TargetInfo {
            kind: "postgres".into(),
            address: i.url.clone(),
            server: i.server.clone(),
            durability: format!("synchronous_commit = {}, fsync = {}", i.synchronous_commit, i.fsync),
            durable: i.synchronous_commit != "off" && i.synchronous_commit != "local" && i.fsync == "on",
            idempotent: false,
            logic: "one PL/pgSQL call (one transaction) per request, rows locked in key order; no idempotency keys"
                .into(),
        }
    }

    fn connections(&self) -> usize {
        self.inner.conns.len()
    }

    async fn seed(&self, catalogue: Arc<Catalogue>) -> Result<(), TargetError> {
        let started = Instant::now();
        let mut line = crate::stats::ProgressLine::default();
        let c = &self.inner.conns[0].client;
        c.batch_execute("TRUNCATE lg_levels, lg_holds").await.map_err(err)?;
        let insert = c
            .prepare(
                "INSERT INTO lg_levels (sku, location, on_hand, reorder_point, reorder_qty) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])",
            )
            .await
            .map_err(err)?;
        let n = catalogue.level_count();
        for start in (0..n).step_by(CHUNK) {
            let range = start as LevelIx..(start + CHUNK).min(n) as LevelIx;
            let skus: Vec<&str> = range.clone().map(|l| catalogue.sku_name(l)).collect();
            let locs: Vec<&str> = range.clone().map(|l| catalogue.location_name(l)).collect();
            let stock: Vec<i64> = range.clone().map(|l| catalogue.seed(l).stock).collect();
            let rp: Vec<i64> = range.clone().map(|l| catalogue.seed(l).reorder_point).collect();
            let rq: Vec<i64> = range.map(|l| catalogue.seed(l).reorder_qty).collect();
            c.execute(&insert, &[&skus, &locs, &stock, &rp, &rq]).await.map_err(err)?;
            let done = (start + CHUNK).min(n);
            line.show(&format!("seeding: {done} of {n} levels ({:.1} s)", started.elapsed().as_secs_f64()), done == n);
        }
        c.batch_execute("ANALYZE lg_levels").await.map_err(err)?;
        Ok(())
    }

    async fn submit<'a>(&'a self, conn: usize, steps: &'a [Step]) -> Result<Vec<StepOutcome>, TargetError> {
        let cat = &*self.inner.catalogue;
        let mut a = Args::default();
        let mut expires = 0i64;
        for (i, s) in steps.iter().enumerate() {
            a.step(cat, i, s);
            if let StepBody::Reserve { expires_at_ms, .. } = &s.body {
                expires = *expires_at_ms as i64;
            }
        }
        let lock_first = a.levels.len() > 1;
        let c = &self.inner.conns[conn % self.inner.conns.len()];
        let now = now_ms();
        let mut attempt = 0;
        let rows = loop {
            attempt += 1;
            let r = c
                .client
                .query(
                    &c.apply,
                    &[&a.kind, &a.hold, &expires, &now, &lock_first, &a.l_mv, &a.l_sku, &a.l_loc, &a.l_loc2, &a.l_qty],
                )
                .await;
            match r {
                Ok(rows) => break rows,
                Err(e) => {
                    let retry = e.code().is_some_and(|c| {
                        *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    });
                    if !retry || attempt >= ATTEMPTS_MAX {
                        return Err(err(e));
                    }
                }
            }
        };
        if rows.len() != steps.len() {
            return Err(TargetError::new("protocol", format!("{} rows for {} movements", rows.len(), steps.len())));
        }
        Ok(steps
            .iter()
            .zip(rows)
            .map(|(s, row)| {
                let code: i16 = row.get(0);
                let detail: i64 = row.get(1);
                let avail: Option<i64> = row.get(2);
                let alerts: i32 = row.get(3);
                let result = match code {
                    0 => Ok(match s.body {
                        StepBody::Reserve { .. } => Detail::Hold(detail as u64),
                        StepBody::Count { .. } => Detail::Variance(detail),
                        _ => Detail::None,
                    }),
                    2 => Err(Reason::UnknownHold),
                    3 => Err(Reason::HoldExpired),
                    _ => Err(Reason::InsufficientStock),
                };
                StepOutcome { result, available_after: avail, alert_lines: alerts as u32 }
            })
            .collect())
    }

    async fn read_levels(&self, catalogue: Arc<Catalogue>) -> Result<Vec<Option<LevelState>>, TargetError> {
        let c = &self.inner.conns[0].client;
        let rows = c
            .query(
                "SELECT sku, location, on_hand, reserved, unsellable, on_hand - reserved - unsellable - safety_stock \
                 FROM lg_levels",
                &[],
            )
            .await
            .map_err(err)?;
        let mut out = vec![None; catalogue.level_count()];
        for r in rows {
            let (sku, loc): (&str, &str) = (r.get(0), r.get(1));
            if let Some(l) = catalogue.find(sku, loc) {
                out[l as usize] = Some(LevelState {
                    on_hand: r.get(2),
                    reserved: r.get(3),
                    unsellable: r.get(4),
                    available: r.get(5),
                });
            }
        }
        Ok(out)
    }

    async fn position(&self) -> Result<u64, TargetError> {
        Ok(0)
    }

    async fn watch_alerts(&self, _: Arc<Catalogue>, _: u64, _: UnboundedSender<LevelIx>) -> Result<(), TargetError> {
        Ok(()) // alerts come back in the function's rows
    }

    async fn check_history(&self, _: u64, _: u64) -> Result<Option<HistoryCheck>, TargetError> {
        Ok(None) // the function's rows carry `available` after each take
    }

    async fn sync_counters(&self) -> Option<(u64, u64)> {
        None
    }
}
