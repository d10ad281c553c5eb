//! [`FlorContext`]: a DataFusion [`SessionContext`] with the flordb tables
//! registered, the pivoted view, and blocking wrappers for callers without
//! an async runtime.

use crate::error::{arrow_err, Error, Result};
use crate::index::Index;
use crate::output::{LogCols, TextType};
use crate::tables::{conform_all, conform_sealed, dedup_loops, full_batches, register, Tables};
use crate::{latest, pivot};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use flor_store::segment::SealedBatch;
use flor_store::store::{Scan, SealedScan, Store};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A project's records, queryable by SQL and as pivoted dataframes.
///
/// Holds the sealed batches in memory (Arrow arrays are shared, not copied;
/// batches read from sealed files keep their constant columns as one value
/// per batch) and, from the first SQL use on, a DataFusion
/// [`SessionContext`] with the tables `logs`, `loops`, `runs` and
/// `versions` registered (docs/FORMAT.md, "Query tables"), built then with
/// one value per row in every column. [`FlorContext::dataframe`] never
/// builds it. A context is a snapshot: records sealed after it was built
/// are not in it; build a new one to see them.
///
/// The blocking methods ([`FlorContext::sql`], [`FlorContext::filter`],
/// [`FlorContext::runs`], [`FlorContext::versions`]) drive DataFusion on a
/// private multi-threaded tokio runtime; from async code, use the `_async`
/// variants or [`FlorContext::session`] (a blocking call there fails with
/// [`Error::NestedRuntime`]). [`FlorContext::dataframe`] needs no runtime.
pub struct FlorContext {
    session: OnceLock<SessionContext>,
    logs: Vec<SealedBatch>,
    loops: Vec<SealedBatch>,
    runs: Vec<RecordBatch>,
    versions: Vec<RecordBatch>,
    index: Index,
    damaged: Vec<Arc<flor_store::Error>>,
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for FlorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlorContext")
            .field("logs_batches", &self.logs.len())
            .field("runs", &self.index.runs.tstamp.len())
            .field("frames", &self.index.frames.len())
            .field("damaged", &self.damaged)
            .finish()
    }
}

impl FlorContext {
    /// Opens the project containing `dir` and reads every sealed segment.
    ///
    /// Opening the store recovers the write-ahead logs of dead writers
    /// ([`Store::open`]). Reading needs no git repository; inside one, the
    /// `versions` table lists the runs' code snapshots. Damaged segments are
    /// skipped and listed by [`FlorContext::damaged`], as is a `versions`
    /// history that cannot be read.
    ///
    /// # Errors
    /// [`Error::Store`] when `dir` does not exist or `.flor/` cannot be
    /// listed; [`Error::Table`] when a segment does not fit its table.
    pub fn open(dir: &Path) -> Result<FlorContext> {
        let store = Store::open(dir)?;
        let scan = store.scan_sealed(&["logs", "loops", "runs"])?;
        let mut extra = Tables::default();
        let mut versions_damage = None;
        if store.in_repo() {
            match flor_store::versions::list(store.root()) {
                Ok(b) => extra.versions.push(b),
                Err(e) => versions_damage = Some(Arc::new(e)),
            }
        }
        let mut ctx = FlorContext::from_sealed(scan, extra)?;
        ctx.damaged.extend(versions_damage);
        Ok(ctx)
    }

    /// A context over a store scan (its damage reports are kept; `versions`
    /// is empty).
    ///
    /// # Errors
    /// As [`FlorContext::from_tables`].
    pub fn from_scan(scan: Scan) -> Result<FlorContext> {
        let damaged = scan.damaged.clone();
        let mut ctx = FlorContext::from_tables(Tables::from(scan))?;
        ctx.damaged = damaged;
        Ok(ctx)
    }

    /// A context over the batches of a [`Store::scan_sealed`] (their
    /// constant columns stay one value per batch until SQL needs them; the
    /// damage reports are kept) followed by those of `tables` (e.g. a live
    /// process's unsealed records). Tables the scan did not read are empty
    /// but for `tables`' batches.
    ///
    /// # Errors
    /// As [`FlorContext::from_tables`].
    pub fn from_sealed(scan: SealedScan, tables: Tables) -> Result<FlorContext> {
        let damaged = scan.damaged;
        let stored = |bs: Vec<RecordBatch>| bs.into_iter().map(SealedBatch::stored);
        let mut logs = scan.logs;
        logs.extend(stored(tables.logs));
        let mut loops = scan.loops;
        loops.extend(stored(tables.loops));
        let mut runs = full_batches("runs", &flor_store::schema::runs(), &scan.runs)?;
        runs.extend(tables.runs);
        let mut ctx = FlorContext::from_parts(logs, loops, runs, tables.versions)?;
        ctx.damaged = damaged;
        Ok(ctx)
    }

    /// A context over the given batches (see [`Tables`]).
    ///
    /// # Errors
    /// [`Error::Table`] when a batch lacks a required column or has a column
    /// of a type that cannot be cast to the table's.
    pub fn from_tables(tables: Tables) -> Result<FlorContext> {
        let stored = |bs: Vec<RecordBatch>| bs.into_iter().map(SealedBatch::stored).collect();
        FlorContext::from_parts(stored(tables.logs), stored(tables.loops), tables.runs, tables.versions)
    }

    fn from_parts(
        logs: Vec<SealedBatch>,
        loops: Vec<SealedBatch>,
        runs: Vec<RecordBatch>,
        versions: Vec<RecordBatch>,
    ) -> Result<FlorContext> {
        let logs = conform_sealed("logs", &flor_store::schema::logs(), logs)?;
        let loops = conform_sealed("loops", &flor_store::schema::loops(), loops)?;
        let runs = conform_all("runs", &flor_store::schema::runs(), &runs)?;
        let versions = conform_all("versions", &flor_store::versions::versions_schema(), &versions)?;
        let index = Index::build(&logs, &loops)?;
        Ok(FlorContext {
            session: OnceLock::new(),
            logs,
            loops,
            runs,
            versions,
            index,
            damaged: Vec::new(),
            runtime: OnceLock::new(),
        })
    }

    /// The DataFusion session with `logs`, `loops`, `runs` and `versions`
    /// registered, for anything the methods here do not cover. Built on the
    /// first call (the tables' constant columns materialized then, about 60
    /// bytes per `logs` or `loops` row) and kept.
    ///
    /// # Errors
    /// [`Error::Table`] or [`Error::Arrow`] when the tables cannot be built
    /// (an internal failure); [`Error::Sql`] when DataFusion refuses them.
    pub fn session(&self) -> Result<&SessionContext> {
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        let logs = full_batches("logs", &flor_store::schema::logs(), &self.logs)?;
        let loops_schema = flor_store::schema::loops();
        let loops = full_batches("loops", &loops_schema, &self.loops)?;
        let loops = dedup_loops(&loops_schema, &loops, &self.index.frames)?;
        let config = SessionConfig::new().with_information_schema(true);
        let session = SessionContext::new_with_config(config);
        register(&session, &logs, &loops, &self.runs, &self.versions)?;
        Ok(self.session.get_or_init(move || session))
    }

    /// Segments skipped as damaged (and a `versions` history that could not
    /// be read), each naming its file.
    pub fn damaged(&self) -> &[Arc<flor_store::Error>] {
        &self.damaged
    }

    /// The pivoted view (DESIGN.md §5, FlorDB's `flor.dataframe`).
    ///
    /// With names: columns `projid, tstamp (µs), filename, source`, one
    /// `Int64` column per loop (0-based iteration) and `<loop>_value` when an
    /// iterated value differs from its index, then one column per name in
    /// the order asked (a repeated name counts once). Names logged at
    /// different loop depths are joined on the run and the loops they share
    /// (full outer join). Rows are ordered by `tstamp`, the loop columns,
    /// `source`, then log order; exact duplicates are dropped. Types,
    /// labels and field metadata: see the crate docs.
    ///
    /// Without names: one row per run with a run-level record, one column
    /// per run-level name.
    ///
    /// A name that was never logged yields no rows (an all-null column when
    /// other names have rows). Names are matched exactly, as data.
    ///
    /// # Errors
    /// [`Error::Table`] for a `logs` batch without the expected columns
    /// (cannot happen for batches accepted by the constructors);
    /// [`Error::Arrow`] for an internal failure building the result.
    pub fn dataframe<S: AsRef<str>>(&self, names: &[S]) -> Result<RecordBatch> {
        self.dataframe_with(names, TextType::Utf8)
    }

    /// [`FlorContext::dataframe`] with its text columns of type `text`
    /// (`LargeUtf8` for pandas, whose pyarrow-backed strings hold 64-bit
    /// offsets: the C ABI hands those out).
    ///
    /// # Errors
    /// As [`FlorContext::dataframe`].
    pub fn dataframe_with<S: AsRef<str>>(&self, names: &[S], text: TextType) -> Result<RecordBatch> {
        let logs = self.logs.iter().map(LogCols::new).collect::<Result<Vec<_>>>()?;
        let mut asked: Vec<&str> = Vec::with_capacity(names.len());
        for n in names {
            if !asked.contains(&n.as_ref()) {
                asked.push(n.as_ref());
            }
        }
        if asked.is_empty() {
            pivot::run_level(&self.index, &logs, text)
        } else {
            pivot::pivot(&self.index, &logs, &asked, text)
        }
    }

    /// [`FlorContext::dataframe`] keeping only the newest `tstamp` of each
    /// `filename` (FlorDB's `flor.utils.latest`, per script).
    ///
    /// # Errors
    /// As [`FlorContext::dataframe`].
    pub fn latest_dataframe<S: AsRef<str>>(&self, names: &[S]) -> Result<RecordBatch> {
        latest(&self.dataframe(names)?)
    }

    /// [`FlorContext::latest_dataframe`] with text columns of type `text`
    /// (see [`FlorContext::dataframe_with`]).
    ///
    /// # Errors
    /// As [`FlorContext::dataframe`].
    pub fn latest_dataframe_with<S: AsRef<str>>(&self, names: &[S], text: TextType) -> Result<RecordBatch> {
        latest(&self.dataframe_with(names, text)?)
    }

    /// Runs one read-only SQL query (no DDL, DML or `SET`) and returns its
    /// result as one batch.
    ///
    /// # Errors
    /// [`Error::Sql`] with DataFusion's message when the query does not
    /// parse, plan or run; [`Error::NestedRuntime`] inside an async runtime.
    pub fn sql(&self, query: &str) -> Result<RecordBatch> {
        self.block_on(self.sql_async(query))?
    }

    /// Async [`FlorContext::sql`].
    ///
    /// # Errors
    /// As [`FlorContext::sql`].
    pub async fn sql_async(&self, query: &str) -> Result<RecordBatch> {
        let opts = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let sql_err = |source| Error::Sql { query: query.to_owned(), source };
        let df = self.session()?.sql_with_options(query, opts).await.map_err(sql_err)?;
        collect(df, query).await
    }

    /// Keeps the rows of `batch` for which the SQL `predicate` holds
    /// (`--where`), e.g. `epoch >= 2 AND "say ""hi""" IS NOT NULL`.
    ///
    /// # Errors
    /// [`Error::Sql`] when the predicate does not parse or refers to an
    /// unknown column; [`Error::NestedRuntime`] inside an async runtime.
    pub fn filter(&self, batch: &RecordBatch, predicate: &str) -> Result<RecordBatch> {
        self.block_on(async {
            let sql_err = |source| Error::Sql { query: predicate.to_owned(), source };
            let session = self.session()?;
            let df = session.read_batch(batch.clone()).map_err(sql_err)?;
            let expr = session.parse_sql_expr(predicate, df.schema()).map_err(sql_err)?;
            let df = df.filter(expr).map_err(sql_err)?;
            collect(df, predicate).await
        })?
    }

    /// The `runs` table, ordered by `tstamp` then `run_id`.
    ///
    /// # Errors
    /// As [`FlorContext::sql`].
    pub fn runs(&self) -> Result<RecordBatch> {
        self.sql("SELECT * FROM runs ORDER BY tstamp, run_id")
    }

    /// The `versions` table, ordered by `tstamp` then `run_id`.
    ///
    /// # Errors
    /// As [`FlorContext::sql`].
    pub fn versions(&self) -> Result<RecordBatch> {
        self.sql("SELECT * FROM versions ORDER BY tstamp, run_id")
    }

    fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::NestedRuntime);
        }
        let rt = match self.runtime.get() {
            Some(rt) => rt,
            None => {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("flor-query")
                    .build()
                    .map_err(Error::Runtime)?;
                self.runtime.get_or_init(move || rt)
            }
        };
        Ok(rt.block_on(f))
    }
}

async fn collect(df: DataFrame, query: &str) -> Result<RecordBatch> {
    let schema = Arc::clone(df.schema().inner());
    let batches = df.collect().await.map_err(|source| Error::Sql { query: query.to_owned(), source })?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    concat_batches(&schema, &batches).map_err(arrow_err("a query result"))
}
