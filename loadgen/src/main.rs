//! `stock-loadgen`: parses flags, builds the runtime, runs the load, prints the report, writes
//! the JSON, and exits 0 (passed), 1 (verification failed) or 2 (could not run).

use clap::Parser;
use loadgen::cli::Args;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    engine::memory::keep_freed_memory();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stock-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.json.clone();
    let report = match runtime.block_on(loadgen::run::execute(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stock-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).expect("the report serialises");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("stock-loadgen: cannot write the JSON report to {}: {e}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("stock-loadgen: wrote {}", path.display());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
