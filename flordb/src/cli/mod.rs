//! The `flor` command line (clap). One file per subcommand.

use clap::{Parser, Subcommand};

mod plot;
mod propagate;
mod query;
mod replay;

/// `flor`: read, query and replay a flordb project.
#[derive(Debug, Parser)]
#[command(name = "flor", version, about = "Query, replay and version ML metadata recorded with flordb")]
pub struct Cli {
    /// Project directory (default: the git repository containing the current directory).
    #[arg(long, global = true, default_value = ".")]
    pub project: std::path::PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pivot logged values into one table (one column per name).
    Dataframe(query::DataframeArgs),
    /// Run SQL over the tables `logs`, `loops`, `runs`, `versions`.
    Sql(query::SqlArgs),
    /// List runs.
    Runs(query::ListArgs),
    /// List code versions (git snapshots) of runs.
    Versions(query::ListArgs),
    /// List the checkpoints of every run (loop path, object, sizes).
    Checkpoints(query::ListArgs),
    /// Carry log statements from a new version of a script into an old one.
    Propagate(propagate::PropagateArgs),
    /// Hindsight logging: recover new log statements' values for past runs.
    Replay(replay::ReplayArgs),
    /// Plot logged values: one line per run, x = the innermost loop.
    Plot(plot::PlotArgs),
}

/// Runs the command line in `std::env::args`; returns the process exit code
/// (0 success, 1 failure with a one-line reason on stderr, 2 usage error).
pub fn main() -> i32 {
    main_with(std::env::args())
}

/// Runs the command line `args` (program name first), as [`main`] does;
/// `python -m flordb …` calls this through the C ABI.
pub fn main_with<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Dataframe(a) => query::dataframe(&cli.project, a),
        Command::Sql(a) => query::sql(&cli.project, a),
        Command::Runs(a) => query::runs(&cli.project, a),
        Command::Versions(a) => query::versions(&cli.project, a),
        Command::Checkpoints(a) => query::checkpoints(&cli.project, a),
        Command::Propagate(a) => propagate::run(a),
        Command::Replay(a) => replay::run(&cli.project, a),
        Command::Plot(a) => plot::run(&cli.project, a),
    };
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("flor: {msg}");
            1
        }
    }
}
