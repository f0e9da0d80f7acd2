//! `stockd`: Perpetua's stock server. Parses flags and the config file, starts
//! [`engine::server::Server`], and stops it gracefully on SIGTERM or Ctrl-C.

use clap::Parser;
use engine::server::{RuntimeKind, Server, ServerConfig, Settings};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Perpetua's stock server: a perpetual-inventory engine behind QUIC (UDP, ALPN perpetua/2).
///
/// With no arguments it keeps its data in ./data and listens on 127.0.0.1:7400. On first start
/// it creates a self-signed TLS certificate (DATA_DIR/tls/cert.pem) and an admin token
/// (DATA_DIR/admin.token, mode 0600), which `stockctl` run in the same folder uses by default.
/// SIGTERM or Ctrl-C stop it gracefully: requests in flight are answered, the log is flushed and
/// a checkpoint is written. Logs go to stderr (RUST_LOG=debug for more).
#[derive(Parser, Debug)]
#[command(name = "stockd", version, verbatim_doc_comment)]
struct Args {
    /// TOML file with any of the settings below, under the same names with underscores
    /// (`data_dir = "/var/lib/perpetua"`, `fsync = "always"`, `streams_max = 64`).
    /// Flags given on the command line win over the file.
    #[arg(long, env = "STOCKD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

fn main() -> ExitCode {
    engine::memory::keep_freed_memory();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stockd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let config = ServerConfig::from_settings(args.settings.or(file))?;
    let runtime = match config.runtime {
        RuntimeKind::CurrentThread => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        RuntimeKind::MultiThread => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let server = Server::start(config).await.map_err(|e| e.to_string())?;
        let info = server.info();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "stockd: data directory {} (recovered {} log records; durable up to sequence number {})",
            info.data_dir.display(),
            info.recovered_records,
            info.durable_seq
        );
        if info.cert_created {
            let _ = writeln!(
                out,
                "stockd: created a self-signed TLS certificate {}; clients verify the server with it (stockctl in this folder does by default; elsewhere pass --ca {})",
                info.cert_path.display(),
                info.cert_path.display()
            );
        }
        if let Some(path) = &info.admin_token_path {
            let _ = writeln!(out, "stockd: wrote the admin token to {} (mode 0600)", path.display());
        }
        let _ = writeln!(out, "stockd: listening on {} (QUIC, ALPN perpetua/2)", server.local_addr());
        if let Some(addr) = server.metrics_addr() {
            let _ = writeln!(out, "stockd: metrics on http://{addr}/metrics");
        }
        let _ = out.flush();
        drop(out);
        let checkpoint = server.run_until_signal().await?;
        match checkpoint {
            Some(path) => println!("stockd: stopped cleanly; checkpoint {}", path.display()),
            None => println!("stockd: stopped"),
        }
        Ok(())
    })
}
