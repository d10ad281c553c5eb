//! The `flor` command: query, replay, propagate and plot a flordb project.

fn main() {
    std::process::exit(flordb::cli::main());
}
