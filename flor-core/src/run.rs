//! Run identity: a microsecond `tstamp` plus a random run id (DESIGN.md §4).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (UTC). The `tstamp` of a run.
pub type Tstamp = i64;

/// Identifies one run: its `tstamp` and a 64-bit random id.
///
/// Two runs started in the same microsecond in two processes still differ in
/// `run_id`; within one process [`RunKey::new`] also makes `tstamp`s strictly
/// increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    /// Microseconds since the Unix epoch, UTC.
    pub tstamp: Tstamp,
    /// A random 64-bit id, unique with overwhelming probability.
    pub run_id: u64,
}

static LAST_TSTAMP: AtomicI64 = AtomicI64::new(0);

/// The current time in microseconds since the epoch.
pub fn now_micros() -> Tstamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl RunKey {
    /// A new run key: `tstamp` is now (made strictly greater than any
    /// `tstamp` handed out before in this process), `run_id` random.
    pub fn new() -> RunKey {
        let now = now_micros();
        let mut prev = LAST_TSTAMP.load(Ordering::Relaxed);
        let tstamp = loop {
            let next = now.max(prev + 1);
            match LAST_TSTAMP.compare_exchange(prev, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(p) => prev = p,
            }
        };
        RunKey { tstamp, run_id: random_u64(tstamp) }
    }

    /// `"<tstamp>-<run_id as 16 hex digits>"`: the stem of this run's file names.
    pub fn file_stem(&self) -> String {
        format!("{}-{:016x}", self.tstamp, self.run_id)
    }

    /// Parses [`RunKey::file_stem`]'s output.
    pub fn parse_stem(stem: &str) -> Option<RunKey> {
        let (t, id) = stem.split_once('-')?;
        Some(RunKey { tstamp: t.parse().ok()?, run_id: u64::from_str_radix(id, 16).ok()? })
    }
}

impl Default for RunKey {
    fn default() -> Self {
        RunKey::new()
    }
}

/// A 64-bit random number from the process id, the clock, a counter and
/// address-space randomization, mixed with SplitMix64.
fn random_u64(seed: i64) -> u64 {
    static COUNTER: AtomicI64 = AtomicI64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    let mut x = (seed as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ u64::from(nanos)
        ^ addr.rotate_left(17)
        ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2 {
        x = splitmix64(x);
    }
    x
}

/// SplitMix64 finalizer: a fast, well-mixed 64-bit hash step.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
