//! flordb's C ABI (DESIGN.md §2 "C / other languages", STYLE.md "C ABI"),
//! and the native half of the Python package `flordb` (loaded through cffi).
//!
//! The header `ffi/include/flor.h` is generated from this crate by
//! cbindgen (`ffi/cbindgen.toml`) and checked in; `tests/header.rs` fails
//! when it is stale.
//!
//! # Conventions
//!
//! - Names are `flor_<noun>_<verb>`. A session is an opaque
//!   [`FlorHandle`] made by [`flor_open`] and released by [`flor_free`]
//!   (which accepts NULL and commits the current run).
//! - Every fallible function returns a [`FlorStatus`]; codes are never
//!   reused. On failure, [`flor_last_error`] gives a message on the calling
//!   thread, and no output argument was written. Outputs are written only
//!   on success; the one exception is the caller's memory that
//!   `flor_checkpoint_load_recipe_to` restores into, which an error may
//!   leave partly written (its docs say so).
//! - Every entry point catches Rust panics and reports `FLOR_STATUS_PANIC`.
//! - Strings in are `(pointer, length)` UTF-8 (NUL bytes allowed) except
//!   paths and argv, which are NUL-terminated. Strings and bytes out are a
//!   [`FlorBuffer`] released with [`flor_buffer_free`].
//! - Value names are interned once ([`flor_name_intern`]) so the hot path
//!   `flor_log_f64(handle, id, value)` carries two words and a value.
//! - Tables leave as an Arrow C stream (`struct ArrowArrayStream`, the
//!   Arrow C Stream interface): [`flor_query_dataframe`], [`flor_query_sql`].
//!
//! ```c
//! FlorHandle *h = NULL;
//! if (flor_open(".", "train.c", NULL, 0, &h) != FLOR_STATUS_OK) {
//!     fprintf(stderr, "%s\n", flor_last_error());
//! }
//! uint32_t loss;
//! flor_name_intern(h, "loss", 4, &loss);
//! flor_log_f64(h, loss, 0.25);
//! flor_free(h); /* commits */
//! ```

#![warn(missing_docs)]

mod buffer;
mod checkpoint;
mod handle;
mod query;
mod replay;
mod status;

pub use buffer::{flor_buffer_free, FlorBuffer};
pub use checkpoint::{flor_checkpoint_due, flor_checkpoint_load, flor_checkpoint_observe, flor_checkpoint_save};
pub use handle::{
    flor_arg_bool, flor_arg_f64, flor_arg_i64, flor_arg_json, flor_arg_lookup, flor_arg_str, flor_commit, flor_flush,
    flor_free, flor_handle_info, flor_log_bool, flor_log_f64, flor_log_i64, flor_log_json, flor_log_repr,
    flor_log_str, flor_loop_enter, flor_loop_exit, flor_loop_iterate, flor_name_intern, flor_open, flor_version,
    FlorHandle,
};
pub use query::{flor_query_dataframe, flor_query_sql};
pub use replay::{flor_cli_main, flor_open_replay};
pub use status::{flor_last_error, FlorStatus};
