//! `flor dataframe|sql|runs|versions`: read a project as tables.
//!
//! Every subcommand prints one table to standard output (or `-o FILE`) in
//! the format asked: `table` (aligned, for people), `csv` (header row,
//! RFC 3339 timestamps, empty cells for null), `json` (an array of objects,
//! nulls explicit; NaN and ±inf become null, as JSON has no such numbers) or
//! `parquet` (needs `-o FILE`; keeps every type and the field metadata).
//! Damaged segments are skipped with a warning on standard error.

use flor_query::arrow::array::RecordBatch;
use flor_query::arrow::util::display::{ArrayFormatter, FormatOptions};
use flor_query::datafusion::parquet::arrow::ArrowWriter;
use flor_query::FlorContext;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// A JSON array of objects, one per row.
    Json,
    /// An Apache Parquet file (requires `-o FILE`).
    Parquet,
}

/// Where and how to write the result.
#[derive(Debug, clap::Args)]
pub struct Output {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to FILE instead of standard output (required with `--format parquet`).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Arguments of `flor dataframe`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  flor dataframe loss acc\n  flor dataframe loss --latest --where 'epoch >= 5'\n  flor dataframe            (one row per run, every run-level name)\n  flor dataframe loss --format parquet -o loss.parquet")]
pub struct DataframeArgs {
    /// Logged names to pivot, one column each, in this order (none: one row
    /// per run with every name logged outside loops). A name never logged
    /// gives an empty column, not an error.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub rows: Rows,
    #[command(flatten)]
    pub out: Output,
}

/// Which rows to keep.
#[derive(Debug, clap::Args)]
pub struct Rows {
    /// Keep only the newest run of each script.
    #[arg(long)]
    pub latest: bool,
    /// Keep the rows for which this SQL predicate holds (after --latest),
    /// e.g. `epoch >= 5 AND loss < 0.1` or `status = 'interrupted'`; quote
    /// odd column names: `"say ""hi"""`.
    #[arg(long = "where", value_name = "PRED")]
    pub predicate: Option<String>,
}

/// Arguments of `flor sql`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Tables: logs, loops, runs, versions (columns in docs/FORMAT.md).\nExample:\n  flor sql \"SELECT l.value_name, count(*) FROM logs l JOIN runs r USING (tstamp, run_id) GROUP BY 1\"")]
pub struct SqlArgs {
    /// One read-only SQL query (DataFusion dialect).
    #[arg(value_name = "QUERY")]
    pub query: String,
    #[command(flatten)]
    pub out: Output,
}

/// Arguments of `flor runs` and `flor versions`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub rows: Rows,
    #[command(flatten)]
    pub out: Output,
}

/// One line, for `flor: <reason>`.
fn line(e: impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn open(project: &Path) -> Result<FlorContext, String> {
    let ctx = FlorContext::open(project).map_err(line)?;
    for d in ctx.damaged() {
        eprintln!("flor: warning: skipped: {}", line(d));
    }
    Ok(ctx)
}

fn finish(ctx: &FlorContext, batch: RecordBatch, rows: &Rows, out: &Output) -> Result<(), String> {
    let batch = if rows.latest { flor_query::latest(&batch).map_err(line)? } else { batch };
    let batch = match rows.predicate.as_deref() {
        Some(p) => ctx.filter(&batch, p).map_err(line)?,
        None => batch,
    };
    write(&batch, out)
}

/// `flor dataframe NAME…`.
///
/// # Errors
/// A one-line reason: the project cannot be read, a bad `--where`, or the
/// output cannot be written.
pub fn dataframe(project: &Path, a: DataframeArgs) -> Result<(), String> {
    check_output(&a.out)?;
    let ctx = open(project)?;
    let batch = ctx.dataframe(&a.names).map_err(line)?;
    finish(&ctx, batch, &a.rows, &a.out)
}

/// `flor sql QUERY`.
///
/// # Errors
/// A one-line reason; for a query DataFusion rejects, DataFusion's message.
pub fn sql(project: &Path, a: SqlArgs) -> Result<(), String> {
    check_output(&a.out)?;
    let ctx = open(project)?;
    let batch = ctx.sql(&a.query).map_err(line)?;
    write(&batch, &a.out)
}

/// `flor runs`.
///
/// # Errors
/// A one-line reason.
pub fn runs(project: &Path, a: ListArgs) -> Result<(), String> {
    check_output(&a.out)?;
    let ctx = open(project)?;
    let batch = ctx.runs().map_err(line)?;
    finish(&ctx, batch, &a.rows, &a.out)
}

/// `flor versions`.
///
/// # Errors
/// A one-line reason.
pub fn versions(project: &Path, a: ListArgs) -> Result<(), String> {
    check_output(&a.out)?;
    // Outside a repository there are no versions to list: say why, rather
    // than print an empty table.
    flor_store::versions::open_repo(project).map_err(line)?;
    let ctx = open(project)?;
    let batch = ctx.versions().map_err(line)?;
    finish(&ctx, batch, &a.rows, &a.out)
}

/// `flor checkpoints`: every checkpoint of every run (run, loop path,
/// object, outermost 0-based iteration, raw / stored / new bytes, chunks,
/// write time), from each run's checkpoint store. A run whose store a live
/// process holds is named on stderr and left out.
///
/// # Errors
/// A one-line reason: the project cannot be read, `--latest` (checkpoints
/// have no script to be the latest of), a bad `--where`, or the output
/// cannot be written.
pub fn checkpoints(project: &Path, a: ListArgs) -> Result<(), String> {
    check_output(&a.out)?;
    if a.rows.latest {
        return Err("--latest does not apply to checkpoints; select runs with --where, e.g. --where \"run LIKE '1764%'\"".into());
    }
    let store = flor_store::store::Store::open(project).map_err(line)?;
    let table = flor_store::checkpoint::checkpoints_table(store.flor_dir()).map_err(line)?;
    for (run, e) in &table.unavailable {
        eprintln!("flor: warning: checkpoints of run {run} left out: {}", line(e));
    }
    let ctx = open(project)?;
    finish(&ctx, table.batch, &a.rows, &a.out)
}

fn check_output(out: &Output) -> Result<(), String> {
    if out.format == Format::Parquet && out.output.is_none() {
        return Err("--format parquet writes a file: give it with -o FILE".into());
    }
    Ok(())
}

/// Writes `batch` as `out` asks.
fn write(batch: &RecordBatch, out: &Output) -> Result<(), String> {
    let io = |e: std::io::Error| match &out.output {
        Some(p) => format!("cannot write {}: {e}", p.display()),
        None => format!("cannot write to standard output: {e}"),
    };
    let arrow = |e: flor_query::arrow::error::ArrowError| line(format!("cannot encode the result: {e}"));
    if out.format == Format::Parquet {
        let path = out.output.as_ref().ok_or("--format parquet writes a file: give it with -o FILE")?;
        return write_parquet(batch, path);
    }
    let mut sink: Box<dyn Write> = match &out.output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(io)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match out.format {
        Format::Table => {
            let text = pretty(batch).map_err(arrow)?;
            writeln!(sink, "{text}").map_err(io)?;
            let n = batch.num_rows();
            writeln!(sink, "({n} row{})", if n == 1 { "" } else { "s" }).map_err(io)?;
        }
        Format::Csv => {
            let mut w = flor_query::arrow::csv::WriterBuilder::new().with_header(true).build(&mut sink);
            w.write(batch).map_err(arrow)?;
        }
        Format::Json => {
            let mut w = flor_query::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, flor_query::arrow::json::writer::JsonArray>(&mut sink);
            w.write(batch).map_err(arrow)?;
            w.finish().map_err(arrow)?;
            drop(w);
            writeln!(sink).map_err(io)?;
        }
        Format::Parquet => {}
    }
    sink.flush().map_err(io)
}

/// Writes `batch` to `path` as Parquet (schema and field metadata kept).
fn write_parquet(batch: &RecordBatch, path: &Path) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let enc = |e: flor_query::datafusion::parquet::errors::ParquetError| line(format!("cannot write {} as Parquet: {e}", path.display()));
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).map_err(enc)?;
    w.write(batch).map_err(enc)?;
    let file = w.into_inner().map_err(enc)?;
    file.sync_all().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The batch as an aligned table: timestamps as `YYYY-MM-DD HH:MM:SS[.ffffff]`,
/// null as an empty cell, numbers right-aligned.
pub fn pretty(batch: &RecordBatch) -> Result<String, flor_query::arrow::error::ArrowError> {
    use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
    let opts = FormatOptions::default().with_null("").with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"));
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(batch.schema().fields().iter().map(|f| f.name().as_str()));
    let formatters = batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect::<Result<Vec<_>, _>>()?;
    for row in 0..batch.num_rows() {
        t.add_row(formatters.iter().map(|f| f.value(row).to_string()));
    }
    for (i, f) in batch.schema().fields().iter().enumerate() {
        if f.data_type().is_numeric() {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    Ok(t.to_string())
}
