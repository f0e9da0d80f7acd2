//! The interactive SQL prompt: statements end with `;` (and may span lines), `\d` lists the
//! tables, `\d TABLE` its columns, `\q` quits; history is kept in `~/.stock_analytics_history`.

use crate::query::{render, run_sql, Format};
use anyhow::Result;
use datafusion::prelude::SessionContext;
use rustyline::error::ReadlineError;

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".stock_analytics_history"))
}

/// Runs the prompt until `\q`, Ctrl-D or Ctrl-C on an empty line.
pub async fn prompt(ctx: &SessionContext, format: Format) -> Result<()> {
    let mut rl = rustyline::DefaultEditor::new()?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!("stock-analytics SQL. Tables: movements, levels, level_history, settings, lots, lot_history. End statements with ;  \\d TABLE describes, \\q quits.");
    let mut statement = String::new();
    loop {
        let line = match rl.readline(if statement.is_empty() { "sql> " } else { "...> " }) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) if !statement.is_empty() => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            let _ = rl.add_history_entry(trimmed);
            let sql = match trimmed.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["\\q"] => break,
                ["\\d"] => "SHOW TABLES".to_string(),
                ["\\d", table] => format!("DESCRIBE {table}"),
                _ => {
                    println!("unknown command {trimmed}: \\d, \\d TABLE, \\q");
                    continue;
                }
            };
            match run_sql(ctx, &sql).await.and_then(|b| render(&b, format)) {
                Ok(s) => print!("{s}"),
                Err(e) => println!("error: {}", crate::cli::describe(&e)),
            }
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        let _ = rl.add_history_entry(sql.trim());
        let started = std::time::Instant::now();
        match run_sql(ctx, sql.trim().trim_end_matches(';')).await {
            Ok(batches) => {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                match render(&batches, format) {
                    Ok(s) => print!("{s}"),
                    Err(e) => println!("error: {}", crate::cli::describe(&e)),
                }
                println!("{rows} rows in {:.3} s", started.elapsed().as_secs_f64());
            }
            Err(e) => println!("error: {}", crate::cli::describe(&e)),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}
