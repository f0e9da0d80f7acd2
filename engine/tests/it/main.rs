//! Integration tests of the engine: real threads, real files in a temporary directory; and the
//! core state machine against a reference model (`model`).

mod common;
mod complex_core;
mod complex_engine;
mod complex_wire;
mod crash;
mod engine_basics;
mod engine_feed;
mod feed;
mod harness;
mod kill;
mod limits;
mod model;
mod server;
mod stockctl;
