//! `flor plot NAME… [--by COLUMN] -o FILE.png` (plotters): one line per run
//! (or per value of `--by`), x = the innermost loop dimension, y = each name.

use flor_query::arrow::array::{Array, AsArray, RecordBatch};
use flor_query::arrow::compute::cast;
use flor_query::arrow::datatypes::{DataType, Float64Type};
use flor_query::FlorContext;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `flor plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Names to plot (numeric values).
    #[arg(required = true)]
    names: Vec<String>,
    /// Column that tells the lines apart (default: tstamp, one line per run),
    /// e.g. `lr` for a run-level argument.
    #[arg(long)]
    by: Option<String>,
    /// SQL predicate over the dataframe's columns.
    #[arg(long = "where")]
    where_: Option<String>,
    /// Output PNG file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Width and height in pixels.
    #[arg(long, default_value_t = 1000)]
    width: u32,
    /// Height in pixels.
    #[arg(long, default_value_t = 600)]
    height: u32,
}

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn text_column(b: &RecordBatch, name: &str) -> Result<Vec<String>, String> {
    let c = b.column_by_name(name).ok_or_else(|| format!("no column {name:?} in the dataframe (columns: {})", columns(b)))?;
    let s = cast(c, &DataType::Utf8).map_err(|e| e.to_string())?;
    let s = s.as_string::<i32>();
    Ok((0..s.len()).map(|i| if s.is_valid(i) { s.value(i).to_owned() } else { "null".into() }).collect())
}

fn columns(b: &RecordBatch) -> String {
    b.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

fn float_column(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, String> {
    let c = b.column_by_name(name).ok_or_else(|| format!("no column {name:?}"))?;
    let f = cast(c, &DataType::Float64).map_err(|_| format!("{name} is not numeric and cannot be plotted"))?;
    let f = f.as_primitive::<Float64Type>();
    Ok((0..f.len()).map(|i| f.is_valid(i).then(|| f.value(i)).filter(|v| v.is_finite())).collect())
}

/// The loop columns of a pivot: between `source` and the names, without `_value`s.
fn loop_columns(b: &RecordBatch, names: &[String]) -> Vec<String> {
    b.schema()
        .fields()
        .iter()
        .skip(4)
        .map(|f| f.name().clone())
        .filter(|n| !names.contains(n) && !n.ends_with("_value"))
        .collect()
}

/// Draws the plot; returns the number of lines drawn.
pub fn draw(batch: &RecordBatch, names: &[String], by: &str, out: &Path, size: (u32, u32)) -> Result<usize, String> {
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let loops: Vec<String> = loop_columns(batch, names).into_iter().filter(|c| c != by).collect();
    let keys = text_column(batch, by)?;
    // x: the innermost loop; with nested loops, its position flattened over the outer ones.
    let loop_vals: Vec<Vec<Option<f64>>> = loops.iter().map(|l| float_column(batch, l)).collect::<Result<_, _>>()?;
    let x_label = match loops.as_slice() {
        [] => "row".to_owned(),
        [one] => one.clone(),
        many => format!("{} (flattened over {})", many[many.len() - 1], many[..many.len() - 1].join(", ")),
    };
    let mut series: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut counters: BTreeMap<String, f64> = BTreeMap::new();
    for name in names {
        let ys = float_column(batch, name)?;
        for (i, y) in ys.iter().enumerate() {
            let Some(y) = y else { continue };
            let x = if loops.len() == 1 {
                loop_vals[0][i].unwrap_or(0.0)
            } else {
                let c = counters.entry(format!("{}\u{0}{name}", keys[i])).or_insert(0.0);
                *c += 1.0;
                *c - 1.0
            };
            series.entry((keys[i].clone(), name.clone())).or_default().push((x, *y));
        }
    }
    if series.is_empty() {
        return Err(format!("no numeric values of {} to plot", names.join(", ")));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for pts in series.values() {
        for (x, y) in pts {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let root = BitMapBackend::new(out, size).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", out.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(names.join(", "), ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(names.join(", "))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    let n = series.len();
    for (k, ((key, name), mut pts)) in series.into_iter().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(k).to_rgba();
        let label = if names.len() > 1 { format!("{by}={key} {name}") } else { format!("{by}={key}") };
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(n)
}

/// Runs `flor plot`.
pub fn run(project: &Path, a: PlotArgs) -> Result<(), String> {
    let ctx = FlorContext::open(project).map_err(|e| e.to_string())?;
    let by = a.by.as_deref().unwrap_or("tstamp");
    // A `--by` that is a logged name (a run-level `lr`) joins in as a column.
    let mut query = a.names.clone();
    if !["projid", "tstamp", "filename", "source"].contains(&by) && !query.iter().any(|n| n == by) {
        query.push(by.to_owned());
    }
    let mut batch = ctx.dataframe(&query).map_err(|e| e.to_string())?;
    if let Some(p) = &a.where_ {
        batch = ctx.filter(&batch, p).map_err(|e| e.to_string())?;
    }
    let n = draw(&batch, &a.names, by, &a.output, (a.width, a.height))?;
    println!("wrote {} ({n} lines)", a.output.display());
    Ok(())
}
