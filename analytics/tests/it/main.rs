//! Integration tests of `perpetua-analytics`: reports over a hand-computed data set, import
//! from a real engine's log, and ingest from a real `stockd` with the ingester killed and
//! restarted (slow variants behind `PERPETUA_SLOW_TESTS=1`).

mod common;
mod ingest;
mod reports;
