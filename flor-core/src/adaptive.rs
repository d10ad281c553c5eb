//! Adaptive checkpoint period (DESIGN.md §7 "Adaptive checkpointing"; the
//! idea is Flor's, VLDB 2021 "Hindsight Logging for Model Training" §5).
//!
//! Checkpoints make replay fast but cost time while training. This module
//! decides, at the end of each outer-loop iteration, whether the runtime
//! should checkpoint, so that the time spent checkpointing stays under a
//! target fraction of the time spent computing (default 1%).
//!
//! Pure logic: no clock, no I/O. The caller measures and reports:
//!
//! 1. [`AdaptivePeriod::observe_iteration`] with the seconds one outer
//!    iteration took (compute only, without any checkpoint time);
//! 2. [`AdaptivePeriod::decide`] (or [`AdaptivePeriod::should_checkpoint`])
//!    for that iteration, saying whether it is the last one;
//! 3. when the answer is yes, [`AdaptivePeriod::observe_checkpoint`] with the
//!    seconds the checkpoint took.
//!
//! # The rule
//!
//! Let `I` be the total observed iteration seconds, `C` the total observed
//! checkpoint seconds over `n ≥ 1` checkpoints, `c = C / n` the mean
//! checkpoint cost and `t` the target overhead. Every iteration earns
//! `t × seconds` of checkpoint budget; every checkpoint spends its cost.
//! At the end of iteration `i`:
//!
//! - [`Schedule::Every`] (`FLOR_CKPT=every`): checkpoint;
//! - the last iteration: checkpoint (replay of the run's end needs it);
//! - no checkpoint cost measured yet: checkpoint, to measure one
//!   (normally iteration 0);
//! - otherwise checkpoint when `t·I − C ≥ 2c`: the budget pays for this
//!   checkpoint and still holds one more in reserve, for the final one.
//!
//! In steady state (constant costs) this checkpoints on average every
//! `c / (t·i)` iterations, where `i` is the mean iteration time
//! ([`AdaptivePeriod::period`] reports `k = ⌈c / (t·i)⌉`). Because every checkpoint the rule chooses leaves
//! one checkpoint's cost in reserve, the run's total overhead `C / I`,
//! including the forced final checkpoint, stays ≤ `t` whenever the run is
//! long enough to pay for its first and last checkpoints (`t·I ≥ 2c`);
//! a shorter run still gets exactly those two (one when it has a single
//! iteration), which is the least replay can use.
//!
//! Arithmetic is exact: seconds are rounded to whole nanoseconds and the
//! target to parts per million, so the same observations always give the
//! same decisions.
//!
//! ```
//! use flor_core::adaptive::AdaptivePeriod;
//!
//! let mut p = AdaptivePeriod::new(0.01).unwrap(); // ≤ 1% overhead
//! let n = 2000;
//! let mut taken = Vec::new();
//! for i in 0..n {
//!     p.observe_iteration(0.010); // 10 ms of training
//!     if p.should_checkpoint(i, i == n - 1) {
//!         p.observe_checkpoint(0.050); // a 50 ms checkpoint
//!         taken.push(i);
//!     }
//! }
//! assert_eq!(taken, vec![0, 1499, 1999]);
//! assert_eq!(p.period(), Some(500));
//! assert!(p.overhead() <= 0.01);
//! ```

use std::fmt;

/// The default target: checkpoint time ≤ 1% of iteration time.
pub const DEFAULT_TARGET_OVERHEAD: f64 = 0.01;

/// The environment variable read by [`AdaptivePeriod::from_env`].
pub const ENV_VAR: &str = "FLOR_CKPT";

const PPM: u128 = 1_000_000;
const NANOS: f64 = 1e9;

/// Which iterations to checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Adaptively, keeping checkpoint time ≤ `target_overhead` × iteration
    /// time (a fraction in `(0, 1]`, e.g. `0.01` for 1%).
    Adaptive {
        /// The target fraction.
        target_overhead: f64,
    },
    /// At the end of every outer iteration (`FLOR_CKPT=every`).
    Every,
    /// At the end of every `k`-th outer iteration (0-based iterations
    /// `k-1, 2k-1, …`) and the last (`FLOR_CKPT=every:k`), for runs that
    /// want a fixed period.
    EveryNth(u32),
}

/// Why [`AdaptivePeriod::decide`] answered as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// [`Schedule::Every`]: every iteration is checkpointed.
    Every,
    /// The caller said this is the last iteration; it is always checkpointed.
    Last,
    /// No checkpoint cost has been measured yet; this checkpoint measures it.
    First,
    /// The earned budget pays for this checkpoint and keeps one in reserve.
    Budget,
    /// Not enough budget: skip this iteration.
    Skip,
}

/// The decision for one outer iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The 0-based outer iteration the decision is for.
    pub iteration: i64,
    /// Whether to checkpoint at the end of this iteration.
    pub checkpoint: bool,
    /// Why.
    pub reason: Reason,
}

/// A `FLOR_CKPT` value or a target overhead that is not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The value given.
    pub value: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENV_VAR}={:?} is not understood: use `every`, `adaptive`, or a target \
             overhead in (0, 1] such as `0.01` or `1%`",
            self.value
        )
    }
}

impl std::error::Error for SettingError {}

/// The adaptive checkpoint policy of one run's outermost loop.
///
/// See the [module documentation](self) for the rule and its guarantee.
/// Cheap to copy; not shared between threads (own one per run).
#[derive(Debug, Clone)]
pub struct AdaptivePeriod {
    schedule: Schedule,
    /// Target in parts per million (1..=1_000_000); unused for `Every`.
    target_ppm: u128,
    iterations: u64,
    iteration_ns: u128,
    checkpoints: u64,
    checkpoint_ns: u128,
    last: Option<Decision>,
}

impl AdaptivePeriod {
    /// An adaptive policy with the given target overhead, a fraction in
    /// `(0, 1]` (`0.01` = checkpoint time at most 1% of iteration time).
    ///
    /// # Errors
    /// [`SettingError`] when `target_overhead` is not finite, is below one
    /// part per million, or exceeds 1.
    pub fn new(target_overhead: f64) -> Result<AdaptivePeriod, SettingError> {
        let bad = || SettingError { value: target_overhead.to_string() };
        if !target_overhead.is_finite() || target_overhead > 1.0 {
            return Err(bad());
        }
        let ppm = (target_overhead * PPM as f64).round();
        if ppm < 1.0 {
            return Err(bad());
        }
        Ok(AdaptivePeriod::with_schedule_ppm(
            Schedule::Adaptive { target_overhead },
            ppm as u128,
        ))
    }

    /// A policy that checkpoints every iteration (`FLOR_CKPT=every`).
    pub fn every_iteration() -> AdaptivePeriod {
        AdaptivePeriod::with_schedule_ppm(Schedule::Every, PPM)
    }

    fn with_schedule_ppm(schedule: Schedule, target_ppm: u128) -> AdaptivePeriod {
        AdaptivePeriod {
            schedule,
            target_ppm,
            iterations: 0,
            iteration_ns: 0,
            checkpoints: 0,
            checkpoint_ns: 0,
            last: None,
        }
    }

    /// The policy selected by the `FLOR_CKPT` environment variable; see
    /// [`AdaptivePeriod::from_setting`] for the values.
    ///
    /// # Errors
    /// [`SettingError`] for a value that is not understood (a typo must not
    /// silently change how a run is checkpointed).
    pub fn from_env() -> Result<AdaptivePeriod, SettingError> {
        match std::env::var(ENV_VAR) {
            Ok(v) => AdaptivePeriod::from_setting(Some(&v)),
            Err(std::env::VarError::NotPresent) => AdaptivePeriod::from_setting(None),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(SettingError { value: v.to_string_lossy().into_owned() })
            }
        }
    }

    /// The policy for a `FLOR_CKPT` value: absent, empty or `adaptive` →
    /// adaptive with [`DEFAULT_TARGET_OVERHEAD`]; `every` → every iteration;
    /// `every:K` → every K-th iteration and the last; a number (`0.05`) or a
    /// percentage (`5%`) → adaptive with that target.
    /// Case and surrounding spaces are ignored.
    ///
    /// # Errors
    /// [`SettingError`] for anything else, and for targets outside `(0, 1]`.
    pub fn from_setting(value: Option<&str>) -> Result<AdaptivePeriod, SettingError> {
        let Some(raw) = value else {
            return AdaptivePeriod::new(DEFAULT_TARGET_OVERHEAD);
        };
        let v = raw.trim().to_ascii_lowercase();
        let bad = || SettingError { value: raw.to_string() };
        match v.as_str() {
            "" | "adaptive" => AdaptivePeriod::new(DEFAULT_TARGET_OVERHEAD),
            "every" => Ok(AdaptivePeriod::every_iteration()),
            _ if v.starts_with("every:") => {
                let k: u32 = v["every:".len()..].trim().parse().map_err(|_| bad())?;
                if k == 0 {
                    return Err(bad());
                }
                Ok(AdaptivePeriod::with_schedule_ppm(Schedule::EveryNth(k), PPM))
            }
            _ => {
                let target = match v.strip_suffix('%') {
                    Some(pct) => pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
                    None => v.parse::<f64>().map_err(|_| bad())?,
                };
                AdaptivePeriod::new(target).map_err(|_| bad())
            }
        }
    }

    /// The schedule this policy follows.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Reports one outer iteration's compute time in seconds (without any
    /// checkpoint time). Negative, NaN and infinite values are ignored.
    pub fn observe_iteration(&mut self, seconds: f64) {
        if let Some(ns) = to_nanos(seconds) {
            self.iterations += 1;
            self.iteration_ns += ns;
        }
    }

    /// Reports one checkpoint's cost in seconds (serializing and saving the
    /// objects, as the training loop experienced it). Negative, NaN and
    /// infinite values are ignored.
    pub fn observe_checkpoint(&mut self, seconds: f64) {
        if let Some(ns) = to_nanos(seconds) {
            self.checkpoints += 1;
            self.checkpoint_ns += ns;
        }
    }

    /// Whether to checkpoint at the end of the 0-based outer `iteration`;
    /// `is_last` says it is the loop's last iteration. Call once per
    /// iteration, after [`AdaptivePeriod::observe_iteration`] for it; see
    /// [`AdaptivePeriod::decide`].
    pub fn should_checkpoint(&mut self, iteration: i64, is_last: bool) -> bool {
        self.decide(iteration, is_last).checkpoint
    }

    /// The decision, with its reason, for the end of the 0-based outer
    /// `iteration`. Asking again for the same iteration returns the same
    /// decision (so a retried call cannot double-spend the budget).
    pub fn decide(&mut self, iteration: i64, is_last: bool) -> Decision {
        if let Some(d) = self.last.filter(|d| d.iteration == iteration) {
            return d;
        }
        let reason = match self.schedule {
            Schedule::Every => Reason::Every,
            Schedule::EveryNth(_) if is_last => Reason::Last,
            Schedule::EveryNth(k) if (iteration + 1) % i64::from(k.max(1)) == 0 => Reason::Every,
            Schedule::EveryNth(_) => Reason::Skip,
            Schedule::Adaptive { .. } if is_last => Reason::Last,
            Schedule::Adaptive { .. } if self.checkpoints == 0 => Reason::First,
            Schedule::Adaptive { .. } if self.budget_allows() => Reason::Budget,
            Schedule::Adaptive { .. } => Reason::Skip,
        };
        let d = Decision { iteration, checkpoint: reason != Reason::Skip, reason };
        self.last = Some(d);
        d
    }

    /// `t·I − C ≥ 2·C/n`, multiplied out to integers:
    /// `n·I·ppm ≥ 10⁶·C·(n + 2)`.
    fn budget_allows(&self) -> bool {
        let n = u128::from(self.checkpoints);
        n.saturating_mul(self.iteration_ns).saturating_mul(self.target_ppm)
            >= PPM.saturating_mul(self.checkpoint_ns).saturating_mul(n + 2)
    }

    /// The steady-state period `k = ⌈c / (t·i)⌉` in iterations, from the
    /// mean checkpoint cost `c` and mean iteration time `i` observed so far
    /// (at least 1). `None` before both a checkpoint and an iteration with
    /// non-zero time have been observed, and for [`Schedule::Every`] it is 1.
    pub fn period(&self) -> Option<u64> {
        if self.schedule == Schedule::Every {
            return Some(1);
        }
        if let Schedule::EveryNth(k) = self.schedule {
            return Some(u64::from(k.max(1)));
        }
        if self.checkpoints == 0 || self.iterations == 0 || self.iteration_ns == 0 {
            return None;
        }
        // k = ceil( (C/n) / (ppm/1e6 · I/m) ) = ceil( C·m·1e6 / (n·I·ppm) )
        let num = self
            .checkpoint_ns
            .saturating_mul(u128::from(self.iterations))
            .saturating_mul(PPM);
        let den = u128::from(self.checkpoints)
            .saturating_mul(self.iteration_ns)
            .saturating_mul(self.target_ppm);
        let k = num.div_ceil(den).max(1);
        Some(u64::try_from(k).unwrap_or(u64::MAX))
    }

    /// Checkpoint seconds divided by iteration seconds so far (0 before
    /// any iteration time was observed).
    pub fn overhead(&self) -> f64 {
        if self.iteration_ns == 0 {
            return 0.0;
        }
        self.checkpoint_ns as f64 / self.iteration_ns as f64
    }

    /// Number of iterations observed.
    pub fn iterations_observed(&self) -> u64 {
        self.iterations
    }

    /// Number of checkpoints observed.
    pub fn checkpoints_observed(&self) -> u64 {
        self.checkpoints
    }
}

fn to_nanos(seconds: f64) -> Option<u128> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    // `as` saturates for values beyond u128 (≈ 5·10²⁹ s): not reachable.
    Some((seconds * NANOS).round() as u128)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Runs `n` iterations of `iter_s` seconds with checkpoints costing
    /// `ckpt_s`; returns the checkpointed iterations and the policy.
    fn simulate(
        mut p: AdaptivePeriod,
        n: i64,
        iter_s: f64,
        ckpt_s: f64,
    ) -> (Vec<i64>, AdaptivePeriod) {
        let mut taken = Vec::new();
        for i in 0..n {
            p.observe_iteration(iter_s);
            if p.should_checkpoint(i, i == n - 1) {
                p.observe_checkpoint(ckpt_s);
                taken.push(i);
            }
        }
        (taken, p)
    }

    /// Acceptance 6 (issue 4): 10 ms iterations, 50 ms checkpoints.
    #[test]
    fn ten_ms_iterations_fifty_ms_checkpoints_stay_under_one_percent() {
        let p = AdaptivePeriod::new(0.01).unwrap();
        let (taken, p) = simulate(p, 10_000, 0.010, 0.050);
        // First (measures the cost), then every 500 once the reserve is
        // earned, and the last iteration.
        let mut expected = vec![0];
        expected.extend((1499..10_000).step_by(500));
        assert_eq!(taken, expected);
        assert_eq!(taken.last(), Some(&9_999));
        assert_eq!(p.period(), Some(500));
        // 19 checkpoints × 50 ms over 10 000 × 10 ms = 0.95 s / 100 s.
        assert_eq!(taken.len(), 19);
        assert!((p.overhead() - 0.0095).abs() < 1e-12, "{}", p.overhead());
        assert!(p.overhead() <= 0.01);
    }

    #[test]
    fn overhead_bound_holds_for_every_long_enough_run() {
        // For every run length n with t·I ≥ 2c (n ≥ 1000 here), the whole
        // run's overhead, final checkpoint included, stays ≤ 1%.
        for n in [1000, 1001, 1499, 1500, 1777, 2500, 4321, 9999] {
            let p = AdaptivePeriod::new(0.01).unwrap();
            let (taken, p) = simulate(p, n, 0.010, 0.050);
            assert_eq!(taken.last(), Some(&(n - 1)), "n = {n}");
            assert!(p.overhead() <= 0.01 + 1e-12, "n = {n}: {}", p.overhead());
        }
    }

    #[test]
    fn short_runs_get_first_and_last() {
        let p = AdaptivePeriod::new(0.01).unwrap();
        assert_eq!(simulate(p.clone(), 1, 0.01, 0.05).0, vec![0]);
        assert_eq!(simulate(p.clone(), 2, 0.01, 0.05).0, vec![0, 1]);
        assert_eq!(simulate(p, 300, 0.01, 0.05).0, vec![0, 299]);
    }

    #[test]
    fn cheap_checkpoints_are_taken_often() {
        // A checkpoint costing 0.5% of an iteration fits every iteration.
        let p = AdaptivePeriod::new(0.01).unwrap();
        let (taken, p) = simulate(p, 10, 1.0, 0.005);
        assert_eq!(taken, (0..10).collect::<Vec<_>>());
        assert_eq!(p.period(), Some(1));
        // 1.5% of an iteration: on average every 1.5 iterations once the
        // reserve is earned; `period` rounds up.
        let p = AdaptivePeriod::new(0.01).unwrap();
        let (taken, p) = simulate(p, 10, 1.0, 0.015);
        assert_eq!(taken, vec![0, 4, 5, 7, 8, 9]);
        assert_eq!(p.period(), Some(2));
        assert!((p.overhead() - 0.009).abs() < 1e-12, "{}", p.overhead());
    }

    #[test]
    fn adapts_when_costs_change() {
        let mut p = AdaptivePeriod::new(0.01).unwrap();
        let mut taken = Vec::new();
        for i in 0..4000 {
            // Iterations slow down 10× half way: checkpoints get 10× denser.
            p.observe_iteration(if i < 2000 { 0.010 } else { 0.100 });
            if p.should_checkpoint(i, i == 3999) {
                p.observe_checkpoint(0.050);
                taken.push(i);
            }
        }
        let late: Vec<_> = taken.iter().filter(|&&i| i >= 2500).collect();
        assert!(late.windows(2).all(|w| w[1] - w[0] <= 60), "{late:?}");
        assert!(p.overhead() <= 0.01);
        assert_eq!(taken.last(), Some(&3999));
    }

    #[test]
    fn every_checkpoints_every_iteration() {
        let p = AdaptivePeriod::from_setting(Some(" EVERY ")).unwrap();
        assert_eq!(p.schedule(), Schedule::Every);
        let (taken, p) = simulate(p, 5, 0.01, 0.05);
        assert_eq!(taken, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.period(), Some(1));
    }

    #[test]
    fn every_nth_takes_a_fixed_period_and_the_last() {
        let p = AdaptivePeriod::from_setting(Some("every:2")).unwrap();
        assert_eq!(p.schedule(), Schedule::EveryNth(2));
        let (taken, p) = simulate(p, 6, 0.01, 0.05);
        assert_eq!(taken, vec![1, 3, 5]);
        assert_eq!(p.period(), Some(2));
        let (taken, _) = simulate(AdaptivePeriod::from_setting(Some("every:4")).unwrap(), 6, 0.01, 0.05);
        assert_eq!(taken, vec![3, 5]);
        assert!(AdaptivePeriod::from_setting(Some("every:0")).is_err());
    }

    #[test]
    fn decide_is_idempotent_per_iteration() {
        let mut p = AdaptivePeriod::new(0.01).unwrap();
        p.observe_iteration(0.01);
        let d = p.decide(0, false);
        assert_eq!(d, Decision { iteration: 0, checkpoint: true, reason: Reason::First });
        assert_eq!(p.decide(0, false), d);
        p.observe_checkpoint(0.05);
        p.observe_iteration(0.01);
        assert_eq!(p.decide(1, false).reason, Reason::Skip);
        assert_eq!(p.decide(2, true).reason, Reason::Last);
    }

    #[test]
    fn settings_parse() {
        let target = |s: Option<&str>| match AdaptivePeriod::from_setting(s).unwrap().schedule() {
            Schedule::Adaptive { target_overhead } => target_overhead,
            Schedule::Every => -1.0,
            Schedule::EveryNth(k) => -f64::from(k),
        };
        assert_eq!(target(None), 0.01);
        assert_eq!(target(Some("")), 0.01);
        assert_eq!(target(Some("adaptive")), 0.01);
        assert_eq!(target(Some("0.05")), 0.05);
        assert_eq!(target(Some("5%")), 0.05);
        assert_eq!(target(Some("1")), 1.0);
        for bad in ["evry", "0", "-0.1", "1.5", "NaN", "inf", "%", "0.0000001"] {
            let e = AdaptivePeriod::from_setting(Some(bad)).unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().starts_with("FLOR_CKPT="), "{e}");
        }
    }

    #[test]
    fn bad_observations_are_ignored() {
        let mut p = AdaptivePeriod::new(0.01).unwrap();
        p.observe_iteration(f64::NAN);
        p.observe_iteration(-1.0);
        p.observe_checkpoint(f64::INFINITY);
        assert_eq!((p.iterations_observed(), p.checkpoints_observed()), (0, 0));
        assert_eq!(p.period(), None);
        assert_eq!(p.overhead(), 0.0);
    }
}
