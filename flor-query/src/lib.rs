//! flordb's query layer: DataFusion tables, the pivoted view, SQL
//! (DESIGN.md §2, §4, §5; tables column by column in docs/FORMAT.md,
//! "Query tables").
//!
//! - [`FlorContext`]: opens a project ([`FlorContext::open`]) or takes
//!   batches ([`FlorContext::from_tables`]) and registers the tables `logs`,
//!   `loops`, `runs` and `versions` in a DataFusion [`SessionContext`];
//! - [`FlorContext::dataframe`]: FlorDB's pivoted view, computed on the Arrow
//!   arrays (no SQL text is built, so a name is always data);
//! - [`FlorContext::sql`]: read-only SQL over the tables;
//! - [`latest`]: the newest run of each script.
//!
//! # The pivoted view
//!
//! `dataframe(&["loss", "acc"])` returns one Arrow batch:
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `projid` | Utf8 | project (repository directory name) |
//! | `tstamp` | Timestamp(µs) | the run |
//! | `filename` | Utf8 | the script, relative to the repository root |
//! | `source` | Utf8 | `forward`, `replay`, or `forward+replay` when a row joins both |
//! | `<loop>` | Int64 | 0-based iteration of each loop seen, outermost first |
//! | `<loop>_value` | Utf8 | the iterated value, when one differs from its index |
//! | `<name>` | by type | the names, in the order asked |
//!
//! A name column is `Int64`, `Float64`, `Boolean` or `Utf8` after its values
//! (ints mixed with floats give `Float64`; any other mix gives `Utf8` text);
//! its field metadata holds [`META_NAME`], [`META_VALUE_TYPE`] and, for a mix,
//! [`META_MIXED_TYPES`]. Two runs with the same `tstamp` stay apart (the run
//! id is part of every join key). A label that would repeat an earlier
//! column's (a name `tstamp`) gets a suffix `_2`, `_3`, …; the metadata keeps
//! the exact name.
//!
//! ```
//! use flor_query::{FlorContext, Tables};
//! let ctx = FlorContext::from_tables(Tables::default())?;
//! let df = ctx.dataframe(&["loss"])?;
//! assert_eq!(df.num_rows(), 0);
//! assert_eq!(df.schema().field(4).name(), "loss");
//! let n = ctx.sql("SELECT count(*) AS n FROM logs")?;
//! assert_eq!(n.num_rows(), 1);
//! # Ok::<(), flor_query::Error>(())
//! ```

#![warn(missing_docs)]

mod context;
mod error;
mod index;
mod latest;
mod output;
mod par;
mod pivot;
mod tables;

pub use context::FlorContext;
pub use datafusion;
pub use datafusion::arrow;
pub use datafusion::prelude::SessionContext;
pub use error::{Error, Result};
pub use latest::latest;
pub use output::{TextType, META_MIXED_TYPES, META_NAME, META_VALUE_TYPE};
pub use tables::Tables;
