//! `report all --html DIR`: one page (`DIR/index.html`) with every report as a table (best-sellers
//! also per channel and for kits), the trends and best-sellers charts beside it (`DIR/*.svg`), and
//! each report's SQL folded below it.

use crate::chart;
use crate::reports::{self, Report, ReportParams};
use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn table(batches: &[RecordBatch]) -> Result<String> {
    let mut out = String::from("<table>\n");
    let Some(first) = batches.first() else { return Ok("<p>(no rows)</p>\n".into()) };
    out.push_str("<tr>");
    for f in first.schema().fields() {
        write!(out, "<th>{}</th>", escape(f.name()))?;
    }
    out.push_str("</tr>\n");
    let opts = FormatOptions::default().with_null("");
    let mut rows = 0;
    for b in batches {
        let fmts: Vec<ArrayFormatter> =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            rows += 1;
            out.push_str("<tr>");
            for f in &fmts {
                write!(out, "<td>{}</td>", escape(&f.value(r).to_string()))?;
            }
            out.push_str("</tr>\n");
        }
    }
    out.push_str("</table>\n");
    if rows == 0 {
        return Ok("<p>(no rows)</p>\n".into());
    }
    Ok(out)
}

/// The sections of the page: every report, and best-sellers also per channel and for kits.
fn sections(p: &ReportParams) -> Vec<(Report, &'static str, &'static str, ReportParams)> {
    let base = ReportParams { by_channel: false, kits: false, ..p.clone() };
    let mut out = Vec::new();
    for report in Report::ALL {
        out.push((report, report.name(), report.title(), base.clone()));
        if report == Report::BestSellers {
            let by_channel = ReportParams { by_channel: true, ..base.clone() };
            out.push((report, "best-sellers-by-channel", "Best-sellers by channel", by_channel));
            let kits = ReportParams { kits: true, ..base.clone() };
            out.push((report, "best-selling-kits", "Best-selling kits (bundles)", kits));
        }
    }
    out
}

/// Writes every report and chart into `dir`; returns the page's path.
pub async fn write_all(ctx: &SessionContext, p: &ReportParams, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut page = String::new();
    let loc = p.location.as_deref().map(|l| format!(", location {}", escape(l))).unwrap_or_default();
    write!(
        page,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Perpetua stock reports</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
         table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}\n\
         th {{ background: #f0f0f0; }} td:nth-child(-n+2) {{ text-align: left; }}\n\
         pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; }}\n</style></head><body>\n\
         <h1>Stock reports</h1>\n<p>{} days to {} (UTC){loc}, top {}; expiring within {} days.</p>\n",
        p.window_days,
        p.as_of,
        if p.top == 0 { "all".to_string() } else { p.top.to_string() },
        p.within_days
    )?;
    for (report, id, title, p) in sections(p) {
        let batches = reports::run(ctx, report, &p).await.with_context(|| format!("report {id}"))?;
        writeln!(page, "<h2 id=\"{id}\">{}</h2>", escape(title))?;
        let charted = matches!(report, Report::Trends | Report::BestSellers) && !p.by_channel;
        if charted && batches.iter().any(|b| b.num_rows() > 0) {
            let file = format!("{id}.svg");
            chart::draw(report, &batches, &p, &dir.join(&file))?;
            writeln!(page, "<img src=\"{file}\" alt=\"{id} chart\" width=\"{}\">", chart::CHART_WIDTH_PX)?;
        }
        page.push_str(&table(&batches)?);
        writeln!(page, "<details><summary>SQL</summary><pre>{}</pre></details>", escape(&reports::sql(report, &p)))?;
    }
    page.push_str("</body></html>\n");
    let path = dir.join("index.html");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
