//! `flor replay NAME… [--where PRED] [--iterations SPEC] [--workers N]
//! [--yes] [--dry-run]` (DESIGN.md §7).

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use flor_replay::execute::{self, ExecOptions};
use flor_replay::executor::{Event, LocalPool};
use flor_replay::plan::{self, Plan, Request};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

/// Arguments of `flor replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Value names logged by the new statements in the current script.
    #[arg(required = true)]
    names: Vec<String>,
    /// The script (path relative to the repository root); default: the
    /// recorded script whose current text logs the names.
    #[arg(long)]
    script: Option<String>,
    /// SQL predicate over run-level values, e.g. "lr > 0.01".
    #[arg(long = "where")]
    where_: Option<String>,
    /// Outer iterations to replay (0-based): "1,4", "0-3", "2-".
    #[arg(long)]
    iterations: Option<String>,
    /// Worker processes (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Do not ask before running.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print the plan and the estimate, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Python interpreter for workers (default: $FLOR_PYTHON, else python3).
    #[arg(long)]
    python: Option<String>,
    /// Print where the time went: planning, the coordinator's CPU, and per
    /// unit its preparation, the worker's start-up (interpreter, imports,
    /// the script up to its loop), checkpoint restores, the loop, and
    /// sealing the records.
    #[arg(long)]
    timings: bool,
}

/// Parses `1,4`, `0-3`, `2-` (open end: up to 2^31) into sorted iterations.
pub fn parse_iterations(spec: &str) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--iterations: {part:?} is not an iteration (0-based) or range a-b");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: i64 = a.trim().parse().map_err(|_| bad())?;
                let b: i64 = if b.trim().is_empty() { i64::from(i32::MAX) } else { b.trim().parse().map_err(|_| bad())? };
                if b < a || b - a > 10_000_000 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() || out.iter().any(|i| *i < 0) {
        return Err(format!("--iterations {spec:?} selects no iteration"));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn print_plan(p: &Plan, workers: usize) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["run (tstamp)", "version", "statements at", "iterations", "checkpoints", "estimate"]);
    for r in &p.runs {
        let its = if r.iterations.len() == r.n_iterations as usize { format!("all {}", r.n_iterations) } else { format!("{:?}", r.iterations) };
        t.add_row(vec![
            flor_replay::fmt_tstamp(r.key.tstamp),
            r.commit_id.chars().take(12).collect(),
            format!("{}{}", r.analysis.position, if matches!(r.analysis.position, flor_replay::position::Position::OuterBody { skip_rest: true }) && !r.skip_rest { " (checkpoints too sparse to skip)" } else { "" }),
            its,
            format!("{} of {}", r.checkpoints.len(), r.n_iterations),
            format!("{:.1} s", r.estimate_s),
        ]);
    }
    println!("Replay of {} in {}: {} run(s) to replay, {} already have them.", p.names.join(", "), p.filename, p.runs.len(), p.up_to_date);
    if !p.runs.is_empty() {
        println!("{t}");
    }
    for u in &p.unplannable {
        println!(
            "cannot replay run {} (version {}): {}",
            flor_replay::fmt_tstamp(u.key.tstamp),
            u.commit_id.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("?"),
            u.reason
        );
    }
    if !p.runs.is_empty() {
        let est = p.estimate_s();
        println!("Estimate: {est:.1} s on one worker; about {:.1} s on {workers} workers (from recorded timings).", est / workers.min(p.runs.len().max(workers)) as f64);
    }
}

/// This process's CPU seconds so far, user and system, all its threads
/// (fields 14 and 15 of `/proc/self/stat`, in clock ticks of 1/100 s,
/// Linux's `USER_HZ`); `None` where that file is absent or unreadable.
fn process_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted after its closing parenthesis, from field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok().map(|t| t / 100.0);
    Some((ticks(14)?, ticks(15)?))
}

/// `--timings`: the planner's time, then per unit, from the worker's
/// `FLOR-REPLAY-TIMES` line, seconds since the coordinator started it.
fn print_timings(plan_s: f64, phases: &[(&'static str, f64)], report: &execute::Report) {
    let phases: Vec<String> = phases.iter().map(|(name, s)| format!("{name} {s:.3}")).collect();
    println!("Timings: planning {plan_s:.3} s (this process: {}); units {:.3} s wall.", phases.join(", "), report.seconds);
    if let Some((user, system)) = process_cpu() {
        println!("CPU of this process so far (the coordinator, all its threads): {user:.2} s user + {system:.2} s system.");
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["unit", "started", "prepare", "start-up", "restores", "restored", "loop", "seal", "exit", "total"]);
    let first = report.outcomes.iter().map(|o| o.started_unix).filter(|t| *t > 0.0).fold(f64::INFINITY, f64::min);
    for (u, o) in report.units.iter().zip(&report.outcomes) {
        let times: serde_json::Map<String, serde_json::Value> =
            o.times.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        let at = |k: &str| times.get(k).and_then(serde_json::Value::as_f64).map(|v| v - o.started_unix);
        let s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let restore = times.get("restore_s").and_then(serde_json::Value::as_f64);
        let lp = diff(at("loop"), at("loop_end"));
        t.add_row(vec![
            u.label.clone(),
            if o.started_unix > 0.0 { format!("+{:.3}", o.started_unix - first) } else { "-".into() },
            format!("{:.3}", o.prepare_s),
            s(at("loop")),
            s(restore),
            times.get("restores").and_then(serde_json::Value::as_str).unwrap_or("-").to_owned(),
            s(lp.zip(restore).map(|(l, r)| l - r)),
            s(diff(at("commit"), at("exit"))),
            s(at("exit").map(|e| o.seconds - o.prepare_s - e)),
            format!("{:.3}", o.seconds),
        ]);
    }
    println!("{t}");
    println!("(seconds; started: process start after the first unit's; start-up: process start to the outer loop; restored: read ahead on a thread, or in place when restored; loop: the outer loop less restores; seal: sealing the replayed records; exit: interpreter exit.)");
}

fn confirm() -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err("refusing to start without confirmation: stdin is not a terminal; pass --yes".into());
    }
    print!("Proceed? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Runs `flor replay`.
pub fn run(project: &Path, a: ReplayArgs) -> Result<(), String> {
    let t_plan = std::time::Instant::now();
    let workers = a.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let iterations = a.iterations.as_deref().map(parse_iterations).transpose()?;
    let req = Request { project: project.to_path_buf(), names: a.names, script: a.script, where_: a.where_, iterations, workers };
    let p = plan::plan(&req).map_err(|e| e.to_string())?;
    let plan_s = t_plan.elapsed().as_secs_f64();
    print_plan(&p, workers);
    if !p.unplannable.is_empty() && p.runs.is_empty() {
        return Err(format!("{} run(s) cannot be replayed (see above)", p.unplannable.len()));
    }
    if a.dry_run || p.runs.is_empty() {
        return Ok(());
    }
    if !a.yes && !confirm()? {
        println!("Nothing replayed.");
        return Ok(());
    }
    let python = a.python.or_else(|| std::env::var("FLOR_PYTHON").ok()).unwrap_or_else(|| "python3".into());
    let opts = ExecOptions { workers, python };
    let multi = MultiProgress::new();
    if !std::io::stderr().is_terminal() {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>40} {bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
    let bars: Mutex<Vec<Option<ProgressBar>>> = Mutex::new(Vec::new());
    let report = execute::run(&p, &opts, &LocalPool { workers }, &|units, ev| {
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        if bars.is_empty() {
            *bars = units
                .iter()
                .map(|u| {
                    let b = multi.add(ProgressBar::new(u.total));
                    b.set_style(style.clone());
                    b.set_prefix(u.label.clone());
                    Some(b)
                })
                .collect();
        }
        match ev {
            Event::Started(u) => {
                if let Some(Some(b)) = bars.get(u) {
                    b.set_message("running");
                }
            }
            Event::Progress { unit, done } => {
                if let Some(Some(b)) = bars.get(unit) {
                    b.set_position(done);
                }
            }
            Event::Finished(o) => {
                if let Some(Some(b)) = bars.get(o.unit) {
                    b.finish_with_message(if o.ok { format!("done in {:.1} s", o.seconds) } else { "FAILED".into() });
                }
            }
        }
    })
    .map_err(|e| e.to_string())?;
    let failed: Vec<_> = report.failed().collect();
    println!(
        "Replayed {} unit(s): {} done, {} failed, in {:.1} s (estimate {:.1} s on one worker).",
        report.units.len(),
        report.units.len() - failed.len(),
        failed.len(),
        report.seconds,
        report.estimate_s
    );
    for (u, o) in &failed {
        println!("FAILED {} (exit {}):\n{}", u.label, o.exit_code.map_or("by signal".into(), |c| c.to_string()), o.stderr_tail);
    }
    if a.timings {
        print_timings(plan_s, &p.timings, &report);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {} replay unit(s) failed", failed.len(), report.units.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_iterations;

    #[test]
    fn iteration_specs() {
        assert_eq!(parse_iterations("1,4").unwrap(), vec![1, 4]);
        assert_eq!(parse_iterations("0-2, 5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_iterations("x").is_err());
        assert!(parse_iterations("3-1").is_err());
    }
}
