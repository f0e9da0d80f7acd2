//! Redis as merchants use it for stock: one hash per level and Lua scripts that check and change
//! it atomically (the classic check-and-decrement, extended to multi-line holds, commits,
//! releases, counts and transfers). A request of several steps is a pipeline of `EVALSHA`s.
//!
//! Layout (prefix `lg:`): `lg:l:{SKU}:{LOCATION}` is a hash with `oh` (on hand), `r` (reserved),
//! `u` (unsellable), `ss` (safety stock), `rp` (reorder point) and `al` (reorder alert raised);
//! `lg:hold_seq` numbers holds; `lg:h:{ID}` is a list `[expires_at_ms, level key, qty, ...]`.
//! Each script answers `{code, detail, has_available, available, alert mask}` with the same
//! codes as the engine's reasons (0 accepted, 1 insufficient_stock, 2 unknown_hold,
//! 3 hold_expired). No idempotency keys: what a merchant's script typically does.

use super::{redact, Target, TargetError, TargetInfo};
use crate::step::{Step, StepBody, StepOutcome};
use crate::verify::{HistoryCheck, LevelState};
use crate::workload::{Catalogue, LevelIx};
use engine::core::{Detail, Reason};
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

const PREFIX: &str = "lg:";
/// Levels per pipeline while seeding and reading.
const CHUNK: usize = 2000;

/// Shared by every script: `available` of a level, and the reorder-alert rule of the engine (raised
/// once when `available` falls to or below the reorder point, re-armed once it rises above).
const LUA_PRELUDE: &str = r#"
local function avail(k)
  local v = redis.call('HMGET', k, 'oh', 'r', 'u', 'ss')
  if not v[1] then return nil end
  return tonumber(v[1]) - tonumber(v[2]) - tonumber(v[3]) - tonumber(v[4])
end
local function alert(k, a)
  local v = redis.call('HMGET', k, 'rp', 'al')
  local rp = tonumber(v[1])
  if rp == nil or rp < 0 then return 0 end
  if a <= rp then
    if v[2] ~= '1' then redis.call('HSET', k, 'al', '1') return 1 end
  elseif v[2] == '1' then
    redis.call('HSET', k, 'al', '0')
  end
  return 0
end
"#;

/// KEYS: hold counter, level keys. ARGV: hold key prefix, expires_at_ms, quantities.
const LUA_RESERVE: &str = r#"
local n = #KEYS - 1
for i = 1, n do
  local a = avail(KEYS[i + 1])
  if a == nil or a < tonumber(ARGV[i + 2]) then return {1, 0, 0, 0, 0} end
end
local id = redis.call('INCR', KEYS[1])
local hold = {ARGV[2]}
local minav = nil
local mask = 0
for i = 1, n do
  local k = KEYS[i + 1]
  local q = tonumber(ARGV[i + 2])
  redis.call('HINCRBY', k, 'r', q)
  local a = avail(k)
  if minav == nil or a < minav then minav = a end
  if alert(k, a) == 1 then mask = mask + 2 ^ (i - 1) end
  hold[#hold + 1] = k
  hold[#hold + 1] = q
end
redis.call('RPUSH', ARGV[1] .. id, unpack(hold))
return {0, id, 1, minav, mask}
"#;

/// ARGV: hold key prefix, hold id, now_ms.
const LUA_COMMIT: &str = r#"
local hk = ARGV[1] .. ARGV[2]
local h = redis.call('LRANGE', hk, 0, -1)
if #h == 0 then return {2, 0, 0, 0, 0} end
if tonumber(ARGV[3]) >= tonumber(h[1]) then return {3, 0, 0, 0, 0} end
for i = 2, #h, 2 do
  local q = tonumber(h[i + 1])
  redis.call('HINCRBY', h[i], 'oh', -q)
  redis.call('HINCRBY', h[i], 'r', -q)
end
redis.call('DEL', hk)
return {0, 0, 0, 0, 0}
"#;

/// ARGV: hold key prefix, hold id.
const LUA_RELEASE: &str = r#"
local hk = ARGV[1] .. ARGV[2]
local h = redis.call('LRANGE', hk, 0, -1)
if #h == 0 then return {2, 0, 0, 0, 0} end
for i = 2, #h, 2 do
  redis.call('HINCRBY', h[i], 'r', -tonumber(h[i + 1]))
  alert(h[i], avail(h[i]))
end
redis.call('DEL', hk)
return {0, 0, 0, 0, 0}
"#;

/// KEYS: level. ARGV: on-hand delta, unsellable delta (a POS sale, a return, a receipt).
const LUA_ADD: &str = r#"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return {1, 0, 0, 0, 0} end
redis.call('HINCRBY', k, 'oh', tonumber(ARGV[1]))
if tonumber(ARGV[2]) ~= 0 then redis.call('HINCRBY', k, 'u', tonumber(ARGV[2])) end
return {0, 0, 0, 0, alert(k, avail(k))}
"#;

/// KEYS: level. ARGV: counted.
const LUA_COUNT: &str = r#"
local k = KEYS[1]
local c = tonumber(ARGV[1])
local v = redis.call('HMGET', k, 'oh', 'u')
local old = tonumber(v[1]) or 0
if v[1] == false then redis.call('HSET', k, 'r', 0, 'u', 0, 'ss', 0) end
redis.call('HSET', k, 'oh', c)
if v[2] and tonumber(v[2]) > c then redis.call('HSET', k, 'u', c) end
return {0, c - old, 0, 0, alert(k, avail(k))}
"#;

/// KEYS: from, to. ARGV: qty.
const LUA_TRANSFER: &str = r#"
local q = tonumber(ARGV[1])
local a = avail(KEYS[1])
if a == nil or a < q or redis.call('EXISTS', KEYS[2]) == 0 then return {1, 0, 0, 0, 0} end
redis.call('HINCRBY', KEYS[1], 'oh', -q)
redis.call('HINCRBY', KEYS[2], 'oh', q)
local a2 = avail(KEYS[1])
local mask = alert(KEYS[1], a2)
alert(KEYS[2], avail(KEYS[2]))
return {0, 0, 1, a2, mask}
"#;

struct Scripts {
    reserve: String,
    commit: String,
    release: String,
    add: String,
    count: String,
    transfer: String,
}

/// Redis with one multiplexed connection per `--connections`.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    conns: Vec<MultiplexedConnection>,
    /// `lg:l:{SKU}:{LOCATION}` by level.
    keys: Vec<String>,
    scripts: Scripts,
    server: String,
    appendonly: String,
    appendfsync: String,
}

fn err(e: redis::RedisError) -> TargetError {
    let kind = if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connection_dropped() || e.is_io_error() {
        "connection_lost".to_string()
    } else {
        format!("redis_{}", e.code().unwrap_or("error").to_lowercase())
    };
    TargetError::new(kind, e.to_string())
}

async fn config_get(con: &mut MultiplexedConnection, name: &str) -> Result<String, TargetError> {
    let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(con).await.map_err(err)?;
    Ok(v.get(1).cloned().unwrap_or_default())
}

/// Loads a script (with the prelude); returns its SHA1 for `EVALSHA`.
async fn load(con: &mut MultiplexedConnection, body: &str) -> Result<String, TargetError> {
    let src = format!("{LUA_PRELUDE}{body}");
    redis::cmd("SCRIPT").arg("LOAD").arg(src).query_async::<String>(con).await.map_err(err)
}

impl Redis {
    pub async fn connect(
        url: &str,
        connections: usize,
        catalogue: Arc<Catalogue>,
        response_timeout: Duration,
    ) -> Result<Redis, TargetError> {
        let client = redis::Client::open(url)
            .map_err(|e| TargetError::new("config", format!("--target {}: {e}", redact(url))))?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(response_timeout));
        let mut conns = Vec::new();
        for _ in 0..connections.max(1) {
            let c = client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| {
                TargetError::new("connect", format!("cannot connect to {}: {e}; is redis-server running?", redact(url)))
            })?;
            conns.push(c);
        }
        let mut con = conns[0].clone();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut con).await.map_err(err)?;
        let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
        let appendonly = config_get(&mut con, "appendonly").await?;
        let appendfsync = config_get(&mut con, "appendfsync").await?;
        let scripts = Scripts {
            reserve: load(&mut con, LUA_RESERVE).await?,
            commit: load(&mut con, LUA_COMMIT).await?,
            release: load(&mut con, LUA_RELEASE).await?,
            add: load(&mut con, LUA_ADD).await?,
            count: load(&mut con, LUA_COUNT).await?,
            transfer: load(&mut con, LUA_TRANSFER).await?,
        };
        let keys = (0..catalogue.level_count() as LevelIx)
            .map(|l| format!("{PREFIX}l:{}:{}", catalogue.sku_name(l), catalogue.location_name(l)))
            .collect();
        Ok(Redis {
            inner: Arc::new(Inner {
                url: redact(url),
                conns,
                keys,
                scripts,
                server: format!("redis {version}"),
                appendonly,
                appendfsync,
            }),
        })
    }

    fn command(&self, step: &Step, now_ms: u64) -> redis::Cmd {
        let i = &self.inner;
        let s = &i.scripts;
        let key = |l: LevelIx| i.keys[l as usize].as_str();
        let hold_prefix = format!("{PREFIX}h:");
        let mut c = redis::cmd("EVALSHA");
        match &step.body {
            StepBody::Reserve { lines, expires_at_ms, .. } => {
                c.arg(&s.reserve).arg(lines.len() + 1).arg(format!("{PREFIX}hold_seq"));
                for (l, _) in lines {
                    c.arg(key(*l));
                }
                c.arg(hold_prefix).arg(*expires_at_ms);
                for (_, q) in lines {
                    c.arg(*q);
                }
            }
            StepBody::Commit { hold, .. } => {
                c.arg(&s.commit).arg(0).arg(hold_prefix).arg(*hold).arg(now_ms);
            }
            StepBody::Release { hold, .. } => {
                c.arg(&s.release).arg(0).arg(hold_prefix).arg(*hold);
            }
            StepBody::SellPos { level, qty } => {
                c.arg(&s.add).arg(1).arg(key(*level)).arg(-qty).arg(0);
            }
            StepBody::Return { level, qty, damaged } => {
                c.arg(&s.add).arg(1).arg(key(*level)).arg(*qty).arg(if *damaged { *qty } else { 0 });
            }
            StepBody::Receive { level, qty } => {
                c.arg(&s.add).arg(1).arg(key(*level)).arg(*qty).arg(0);
            }
            StepBody::Count { level, counted } => {
                c.arg(&s.count).arg(1).arg(key(*level)).arg(*counted);
            }
            StepBody::Transfer { from, to, qty } => {
                c.arg(&s.transfer).arg(2).arg(key(*from)).arg(key(*to)).arg(*qty);
            }
            // Only complex inventory adjusts, and it is refused for this target (see `run`).
            StepBody::Adjust { level, delta } => {
                c.arg(&s.add).arg(1).arg(key(*level)).arg(*delta).arg(0);
            }
        }
        c
    }
}

/// A script's reply as a step outcome.
fn outcome(step: &Step, r: &[i64]) -> Result<StepOutcome, TargetError> {
    let [code, detail, has_avail, avail, mask] = r else {
        return Err(TargetError::new("protocol", format!("a script answered {r:?}")));
    };
    let result = match code {
        0 => Ok(match &step.body {
            StepBody::Reserve { .. } => Detail::Hold(*detail as u64),
            StepBody::Count { .. } => Detail::Variance(*detail),
            _ => Detail::None,
        }),
        1 => Err(Reason::InsufficientStock),
        2 => Err(Reason::UnknownHold),
        3 => Err(Reason::HoldExpired),
        other => return Err(TargetError::new("protocol", format!("a script answered code {other}"))),
    };
    Ok(StepOutcome { result, available_after: (*has_avail == 1).then_some(*avail), alert_lines: *mask as u32 })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Target for Redis {
    fn info(&self) -> TargetInfo {
        let i = &self.inner;
        TargetInfo {
            kind: "redis".into(),
            address: i.url.clone(),
            server: i.server.clone(),
            durability: format!("appendonly {}, appendfsync {}", i.appendonly, i.appendfsync),
            durable: i.appendonly == "yes" && i.appendfsync == "always",
            idempotent: false,
            logic: "Lua scripts (EVALSHA), one per movement, pipelined per request; no idempotency keys".into(),
        }
    }

    fn connections(&self) -> usize {
        self.inner.conns.len()
    }

    async fn seed(&self, catalogue: Arc<Catalogue>) -> Result<(), TargetError> {
        let started = Instant::now();
        let mut line = crate::stats::ProgressLine::default();
        let mut con = self.inner.conns[0].clone();
        let n = catalogue.level_count();
        for start in (0..n).step_by(CHUNK) {
            let mut p = redis::pipe();
            for l in start..(start + CHUNK).min(n) {
                let s = catalogue.seed(l as LevelIx);
                p.cmd("HSET")
                    .arg(&self.inner.keys[l])
                    .arg("oh")
                    .arg(s.stock)
                    .arg("r")
                    .arg(0)
                    .arg("u")
                    .arg(0)
                    .arg("ss")
                    .arg(0)
                    .arg("rp")
                    .arg(s.reorder_point)
                    .arg("al")
                    .arg(0)
                    .ignore();
            }
            p.query_async::<()>(&mut con).await.map_err(err)?;
            let done = (start + CHUNK).min(n);
            line.show(&format!("seeding: {done} of {n} levels ({:.1} s)", started.elapsed().as_secs_f64()), done == n);
        }
        Ok(())
    }

    async fn submit<'a>(&'a self, conn: usize, steps: &'a [Step]) -> Result<Vec<StepOutcome>, TargetError> {
        let now = now_ms();
        let mut con = self.inner.conns[conn % self.inner.conns.len()].clone();
        let replies: Vec<Vec<i64>> = if steps.len() == 1 {
            vec![self.command(&steps[0], now).query_async(&mut con).await.map_err(err)?]
        } else {
            let mut p = redis::pipe();
            for s in steps {
                p.add_command(self.command(s, now));
            }
            p.query_async(&mut con).await.map_err(err)?
        };
        if replies.len() != steps.len() {
            return Err(TargetError::new("protocol", format!("{} replies to {} scripts", replies.len(), steps.len())));
        }
        steps.iter().zip(&replies).map(|(s, r)| outcome(s, r)).collect()
    }

    async fn read_levels(&self, catalogue: Arc<Catalogue>) -> Result<Vec<Option<LevelState>>, TargetError> {
        let mut con = self.inner.conns[0].clone();
        let n = catalogue.level_count();
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(CHUNK) {
            let mut p = redis::pipe();
            for l in start..(start + CHUNK).min(n) {
                p.cmd("HMGET").arg(&self.inner.keys[l]).arg("oh").arg("r").arg("u").arg("ss");
            }
            let rows: Vec<Vec<Option<i64>>> = p.query_async(&mut con).await.map_err(err)?;
            for r in rows {
                out.push(match r.as_slice() {
                    [Some(oh), r, u, ss] => {
                        let (r, u, ss) = (r.unwrap_or(0), u.unwrap_or(0), ss.unwrap_or(0));
                        Some(LevelState { on_hand: *oh, reserved: r, unsellable: u, available: oh - r - u - ss })
                    }
                    _ => None,
                });
            }
        }
        Ok(out)
    }

    async fn position(&self) -> Result<u64, TargetError> {
        Ok(0)
    }

    async fn watch_alerts(&self, _: Arc<Catalogue>, _: u64, _: UnboundedSender<LevelIx>) -> Result<(), TargetError> {
        Ok(()) // alerts come back in the scripts' replies
    }

    async fn check_history(&self, _: u64, _: u64) -> Result<Option<HistoryCheck>, TargetError> {
        Ok(None) // the scripts' replies carry `available` after each take
    }

    async fn sync_counters(&self) -> Option<(u64, u64)> {
        None
    }
}
