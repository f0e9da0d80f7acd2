//! Integration tests of `perpetua-analytics`: reports over hand-computed data sets (`reports`;
//! `complex` for lots, serial numbers, kits and channel allocations), import from a real
//! engine's log, and ingest from a real `stockd` with the ingester killed and restarted (slow
//! variants behind `PERPETUA_SLOW_TESTS=1`).

mod common;
mod complex;
mod ingest;
mod reports;
