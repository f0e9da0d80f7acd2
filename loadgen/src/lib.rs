//! `stock-loadgen` as a library: capacity testing of the Perpetua engine with realistic checkout
//! traffic, side by side with Redis and PostgreSQL running the same workload.
//!
//! - [`workload`]: the catalogue and the seeded, deterministic sequence of shop operations;
//! - [`complex`]: complex inventory in the workload (lots, serial numbers, kits, channels);
//! - [`step`]: the movements sent and the outcomes targets answer;
//! - [`target`]: the engine, Redis and PostgreSQL behind one trait;
//! - [`driver`]: open- and closed-loop sending, pacing, follow-ups (commits, releases, receipts);
//! - [`stats`]: latency histograms and counts; [`verify`]: the end-of-run audit (and
//!   [`verify::units`]: lots, serial numbers and allocations; [`verify::book`]: what the load
//!   generator knows of its serial numbers and channel sales);
//! - [`run`]: a whole run from flags to report; [`cli`]: the flags.
//!
//! Architecture invariant: the workload and the verification know nothing of any target; a
//! target knows nothing of pacing or measurement. A new target is one module implementing
//! [`target::Target`].

pub mod cli;
pub mod complex;
pub mod driver;
pub mod run;
pub mod stats;
pub mod step;
pub mod target;
pub mod verify;
pub mod workload;
