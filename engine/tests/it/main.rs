//! Integration tests of the engine: real threads, real files in a temporary directory.

mod common;
mod crash;
mod engine_basics;
mod engine_feed;
mod feed;
mod harness;
mod limits;
mod server;
mod stockctl;
