//! Helpers shared by the integration tests.

use engine::core::*;
use engine::runtime::{Clock, Engine, EngineConfig, Fsync};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub const T0: Millis = 1_700_000_000_000;

pub fn config(dir: &Path, shards: usize) -> (EngineConfig, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(T0));
    let mut c = EngineConfig::new(dir);
    c.shards = shards;
    c.fsync = Fsync::Always;
    c.clock = Clock::Manual(clock.clone());
    (c, clock)
}

pub fn open(dir: &Path, shards: usize) -> (Engine, Arc<AtomicU64>) {
    let (c, clock) = config(dir, shards);
    (Engine::open(c).expect("engine opens"), clock)
}

pub fn mv(key: Option<&str>, kind: MovementKind) -> Movement {
    Movement { key: key.map(Into::into), channel: "web".into(), reference: None, occurred_at: None, kind }
}

pub fn receive(sku: &str, loc: &str, qty: Qty) -> Movement {
    mv(None, MovementKind::Receive { sku: sku.into(), location: loc.into(), qty, unit_cost: None, units: Units::ANY })
}

pub fn sell(key: Option<&str>, sku: &str, loc: &str, qty: Qty) -> Movement {
    mv(
        key,
        MovementKind::Sell {
            sku: sku.into(),
            location: loc.into(),
            qty,
            unit_price: None,
            hold: None,
            allow_negative: false,
            units: Units::ANY,
        },
    )
}

pub fn reserve(key: Option<&str>, lines: &[(&str, &str, Qty)], expires_at: Millis) -> Movement {
    let lines = lines
        .iter()
        .map(|&(sku, location, qty)| Line {
            sku: sku.into(),
            location: location.into(),
            qty,
            unit_price: None,
            kit: None,
            units: Units::ANY,
        })
        .collect();
    mv(key, MovementKind::Reserve { hold: 0, lines, expires_at })
}

/// (on_hand, reserved, available) of a level, or None.
pub fn oh_res_av(e: &Engine, sku: &str, loc: &str) -> Option<(Qty, Qty, Qty)> {
    e.level(sku, loc).map(|l| (l.on_hand, l.reserved, l.available))
}

/// Two SKUs that live on different shards of a `shards`-shard engine.
pub fn skus_on_two_shards(shards: usize) -> (String, String) {
    let a = "SKU-0".to_string();
    let b = (1..).map(|i| format!("SKU-{i}")).find(|s| shard_of(s, shards) != shard_of(&a, shards)).unwrap();
    (a, b)
}
