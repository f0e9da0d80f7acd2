//! Async reads for servers: each is answered by the shard that owns the SKU, in order with its
//! movements, without blocking a runtime thread. A kit's level (and its `available` for a
//! channel) is derived from its components' (see [`kit_level`]); a kit has no lots, allocations
//! or serial numbers of its own.

use super::{Answer, Engine, Query};
use crate::core::*;
use futures_util::future::join_all;
use std::collections::BTreeSet;

impl Engine {
    /// One level; a kit's is derived from its components' levels at that location.
    pub async fn level_async(&self, sku: &str, location: &str) -> Option<LevelView> {
        match self.kit_components(sku) {
            Some(components) => {
                let levels = join_all(components.iter().map(|c| self.stored_level_async(&c.sku, location))).await;
                kit_level(sku, location, &components, &levels)
            }
            None => self.stored_level_async(sku, location).await,
        }
    }

    /// Every location's level of one SKU, sorted by location. A kit's are derived at every
    /// location where one of its components has a level.
    pub async fn sku_levels_async(&self, sku: &str) -> Vec<LevelView> {
        let Some(components) = self.kit_components(sku) else { return self.stored_sku_levels_async(sku).await };
        let per_component = join_all(components.iter().map(|c| self.stored_sku_levels_async(&c.sku))).await;
        let locations: BTreeSet<&str> = per_component.iter().flatten().map(|l| l.location.as_str()).collect();
        locations
            .into_iter()
            .filter_map(|location| {
                let levels: Vec<Option<LevelView>> =
                    per_component.iter().map(|ls| ls.iter().find(|l| l.location == location).cloned()).collect();
                kit_level(sku, location, &components, &levels)
            })
            .collect()
    }

    /// A level with its lots (first to expire first), channel allocations and loose units.
    /// `None` for a level never recorded, and for a kit.
    pub async fn level_detail_async(&self, sku: &str, location: &str) -> Option<LevelDetail> {
        match self.query_async(sku, Query::LevelDetail { sku: sku.into(), location: location.into() }).await {
            Some(Answer::LevelDetail(d)) => d,
            _ => None,
        }
    }

    /// `available` of a level for one channel. A kit's is how many whole kits its components'
    /// `available` for that channel make (`None` when no component has a level there).
    pub async fn available_for_async(&self, sku: &str, location: &str, channel: &str) -> Option<Qty> {
        let Some(components) = self.kit_components(sku) else {
            return self.stored_available_for_async(sku, location, channel).await;
        };
        let each =
            join_all(components.iter().map(|c| self.stored_available_for_async(&c.sku, location, channel))).await;
        if each.iter().all(Option::is_none) {
            return None;
        }
        components.iter().zip(&each).map(|(c, a)| a.map_or(0, |a| a.max(0) / c.qty)).min()
    }

    /// Where a serial number is, its state, and every movement that named it.
    pub async fn serial_async(&self, sku: &str, serial: &str) -> Option<SerialView> {
        match self.query_async(sku, Query::Serial { sku: sku.into(), serial: serial.into() }).await {
            Some(Answer::Serial(s)) => s,
            _ => None,
        }
    }

    /// A SKU's settings as its shard has applied them (the default if never set).
    pub async fn sku_settings_async(&self, sku: &str) -> SkuSettings {
        match self.query_async(sku, Query::SkuSettings { sku: sku.into() }).await {
            Some(Answer::SkuSettings(s)) => s,
            _ => SkuSettings::default(),
        }
    }

    async fn stored_level_async(&self, sku: &str, location: &str) -> Option<LevelView> {
        match self.query_async(sku, Query::Level { sku: sku.into(), location: location.into() }).await {
            Some(Answer::Level(l)) => l,
            _ => None,
        }
    }

    async fn stored_sku_levels_async(&self, sku: &str) -> Vec<LevelView> {
        let mut levels: Vec<LevelView> = match self.query_async(sku, Query::Levels { location: None }).await {
            Some(Answer::Levels(ls)) => ls.into_iter().filter(|l| l.sku == sku).collect(),
            _ => Vec::new(),
        };
        levels.sort_unstable_by(|a, b| a.location.cmp(&b.location));
        levels
    }

    async fn stored_available_for_async(&self, sku: &str, location: &str, channel: &str) -> Option<Qty> {
        let q = Query::AvailableFor { sku: sku.into(), location: location.into(), channel: channel.into() };
        match self.query_async(sku, q).await {
            Some(Answer::AvailableFor(a)) => a,
            _ => None,
        }
    }
}
