//! Charts with `plotters`: the trends report as lines (daily units and 7-day average per SKU)
//! and best-sellers as bars, to PNG (bitmap backend) or SVG. Text is drawn with the DejaVu Sans
//! font shipped in `analytics/assets/` through plotters' pure-Rust `ab_glyph` renderer, so
//! charts render the same on a headless machine with no system fonts.

use crate::reports::{Report, ReportParams};
use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT_NAME: &str = "sans-serif";
pub const CHART_WIDTH_PX: u32 = 1000;
pub const CHART_HEIGHT_PX: u32 = 560;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT).is_err() {
            panic!("the font shipped in analytics/assets is not a valid TrueType font");
        }
    });
}

/// A column of all batches as strings.
fn strings(batches: &[RecordBatch], name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(name).with_context(|| format!("no column {name}"))?;
        let col = arrow::compute::cast(col, &DataType::Utf8)?;
        let s = col.as_string::<i32>();
        out.extend((0..s.len()).map(|i| if s.is_null(i) { String::new() } else { s.value(i).to_string() }));
    }
    Ok(out)
}

/// A column of all batches as numbers (null as 0).
fn numbers(batches: &[RecordBatch], name: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(name).with_context(|| format!("no column {name}"))?;
        let col = arrow::compute::cast(col, &DataType::Float64)?;
        let a = col.as_primitive::<Float64Type>();
        out.extend((0..a.len()).map(|i| if a.is_null(i) { 0.0 } else { a.value(i) }));
    }
    Ok(out)
}

/// The label of each bar: the SKU (or kit), after its channel when the rows are per channel.
fn bar_labels(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let has = |name: &str| batches.first().is_some_and(|b| b.column_by_name(name).is_some());
    let items = strings(batches, if has("kit") { "kit" } else { "sku" })?;
    if !has("channel") {
        return Ok(items);
    }
    let channels = strings(batches, "channel")?;
    Ok(channels.iter().zip(items).map(|(c, i)| format!("{c}: {i}")).collect())
}

/// Draws the chart of a report's result to `path` (`.svg` for SVG, anything else PNG).
pub fn draw(report: Report, batches: &[RecordBatch], p: &ReportParams, path: &Path) -> Result<()> {
    register_font();
    let svg = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let size = (CHART_WIDTH_PX, CHART_HEIGHT_PX);
    let result = if svg {
        let root = SVGBackend::new(path, size).into_drawing_area();
        draw_on(report, batches, p, &root).and_then(|_| root.present().map_err(|e| anyhow::anyhow!("{e}")))
    } else {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        draw_on(report, batches, p, &root).and_then(|_| root.present().map_err(|e| anyhow::anyhow!("{e}")))
    };
    result.with_context(|| format!("cannot draw the chart {}", path.display()))
}

fn draw_on<DB: DrawingBackend>(
    report: Report,
    batches: &[RecordBatch],
    p: &ReportParams,
    root: &DrawingArea<DB, Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let loc = p.location.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
    match report {
        Report::Trends => {
            let skus = strings(batches, "sku")?;
            let dates = strings(batches, "date")?;
            let units = numbers(batches, "units")?;
            let avg = numbers(batches, "moving_avg_7d")?;
            let mut days: Vec<String> = dates.clone();
            days.sort();
            days.dedup();
            let mut order: Vec<String> = Vec::new();
            for s in &skus {
                if !order.contains(s) {
                    order.push(s.clone());
                }
            }
            let y_max = units.iter().cloned().fold(1.0, f64::max) * 1.1;
            let title = format!("Units sold per day, {} days to {}{loc}", p.window_days, p.as_of);
            let mut chart = ChartBuilder::on(root)
                .caption(title, (FONT_NAME, 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(80)
                .build_cartesian_2d(0usize..days.len().saturating_sub(1).max(1), 0f64..y_max)
                .map_err(err)?;
            let labels = days.clone();
            chart
                .configure_mesh()
                .x_labels(8)
                .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
                .y_desc("units")
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style((FONT_NAME, 13))
                .draw()
                .map_err(err)?;
            for (k, sku) in order.iter().enumerate() {
                let color = Palette99::pick(k).to_rgba();
                let idx = |d: &String| days.binary_search(d).unwrap_or(0);
                let rows: Vec<usize> = (0..skus.len()).filter(|&i| &skus[i] == sku).collect();
                chart
                    .draw_series(LineSeries::new(
                        rows.iter().map(|&i| (idx(&dates[i]), units[i])),
                        color.stroke_width(1),
                    ))
                    .map_err(err)?;
                chart
                    .draw_series(LineSeries::new(rows.iter().map(|&i| (idx(&dates[i]), avg[i])), color.stroke_width(3)))
                    .map_err(err)?
                    .label(format!("{sku} (7-day avg)"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT_NAME, 13))
                .draw()
                .map_err(err)?;
        }
        Report::BestSellers | Report::Abc => {
            let skus = bar_labels(batches)?;
            let units = numbers(batches, "units")?;
            let y_max = units.iter().cloned().fold(1.0, f64::max) * 1.15;
            let what = if report == Report::BestSellers && p.kits { "Kits sold" } else { "Units sold" };
            let title = format!("{what}, {} days to {}{loc}", p.window_days, p.as_of);
            let mut chart = ChartBuilder::on(root)
                .caption(title, (FONT_NAME, 22))
                .margin(12)
                .x_label_area_size(60)
                .y_label_area_size(80)
                .build_cartesian_2d((0..skus.len().saturating_sub(1)).into_segmented(), 0f64..y_max)
                .map_err(err)?;
            let labels = skus.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(skus.len().max(1))
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .y_desc("units")
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style((FONT_NAME, 13))
                .draw()
                .map_err(err)?;
            chart
                .draw_series(units.iter().enumerate().map(|(i, &u)| {
                    let mut bar = Rectangle::new(
                        [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), u)],
                        Palette99::pick(0).filled(),
                    );
                    bar.set_margin(0, 0, 6, 6);
                    bar
                }))
                .map_err(err)?;
        }
        other => bail!("the {} report has no chart (charts: trends, best-sellers, abc)", other.name()),
    }
    Ok(())
}
