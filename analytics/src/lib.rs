//! Perpetua analytics: follows the engine's change feed (or reads a stopped engine's log) into
//! Parquet files, and answers SQL and merchant reports over them with DataFusion, so that the
//! engine's hot path never pays for analysis. See `docs/analytics.md`.
//!
//! - [`schema`]: the file layout and table schemas.
//! - [`rows`]: log records to `movements` and `lot_history` rows (pure).
//! - [`store`]: local folder or object storage.
//! - [`sink`]: chunks of rows as Parquet with commit markers (resume with no gap, no duplicate).
//! - [`import`]: from a stopped engine's log segments; [`ingest`]: from the change feed.
//! - [`query`], [`reports`], [`chart`], [`html`], [`repl`]: SQL, reports and their output.
//! - [`cli`]: the command line.

pub mod chart;
pub mod cli;
pub mod html;
pub mod import;
pub mod ingest;
pub mod query;
pub mod repl;
pub mod reports;
pub mod rows;
pub mod schema;
pub mod sink;
pub mod store;
