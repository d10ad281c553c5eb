//! `flor propagate`: carry log statements from a new version of a script
//! into an old one (DESIGN.md §7 step 3; `flor_replay::propagate`).

use std::io::Write;
use std::path::{Path, PathBuf};

use flor_replay::propagate::{propagate, unified_diff, Outcome, Placed, Target};

/// Arguments of `flor propagate`.
#[derive(Debug, clap::Args)]
pub struct PropagateArgs {
    /// The new version of the script, which has the statements.
    #[arg(long = "from", value_name = "NEW.py")]
    pub from: PathBuf,
    /// The old version of the script, which receives them.
    #[arg(long = "to", value_name = "OLD.py")]
    pub to: PathBuf,
    /// What to carry: the name a statement logs (`flor.log("NAME", …)`), or a
    /// 1-based line number of NEW.py.
    #[arg(value_name = "NAME", required = true)]
    pub targets: Vec<String>,
    /// Write the result into OLD.py instead of only printing the diff.
    #[arg(long)]
    pub write: bool,
}

/// Prints the unified diff from OLD.py to the propagated file on stdout and
/// one line per statement on stderr; with `--write`, replaces OLD.py
/// (written to a temporary file beside it, then renamed).
///
/// # Errors
/// A one-line reason naming the file: unreadable or unwritable files, a
/// syntax error, a name or line with no statement, a statement with no place
/// in OLD.py.
pub fn run(a: PropagateArgs) -> Result<(), String> {
    let new = read(&a.from)?;
    let old = read(&a.to)?;
    let targets: Vec<Target> = a.targets.iter().map(|t| Target::from_arg(t)).collect();
    let out = propagate(&new, &old, &targets)
        .map_err(|e| format!("propagate {} → {}: {e}", a.from.display(), a.to.display()))?;
    let to = a.to.display().to_string();
    let diff = unified_diff(&old, &out.text, &format!("a/{to}"), &format!("b/{to}"));
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(diff.as_bytes()).map_err(|e| format!("writing the diff: {e}"))?;
    stdout.flush().map_err(|e| format!("writing the diff: {e}"))?;
    for p in &out.placements {
        match &p.outcome {
            Outcome::Inserted { line, anchor, renamed } => {
                let how = match anchor {
                    Placed::After { old_line } => format!("after old line {old_line}"),
                    Placed::FirstInBlock { old_line } => format!("first in the block of old line {old_line}"),
                    Placed::Before { old_line } => format!("before old line {old_line}"),
                    _ => "placed".to_owned(),
                };
                let renames: Vec<String> = renamed.iter().map(|(n, o)| format!("{n} → {o}")).collect();
                let renames = if renames.is_empty() { String::new() } else { format!(", renamed {}", renames.join(", ")) };
                eprintln!("{} (new line {}): inserted at {to}:{line}, {how}{renames}", p.target, p.new_line);
            }
            Outcome::AlreadyPresent { old_line } => {
                eprintln!("{} (new line {}): already in {to}:{old_line}, left alone", p.target, p.new_line);
            }
            _ => {}
        }
    }
    if a.write && out.changed() {
        write_atomically(&a.to, &out.text)?;
        eprintln!("wrote {to}");
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Writes `text` to a temporary file in the same folder, then renames it
/// over `path`, so a crash leaves either the old or the new file.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.flor-propagate.{}", std::process::id()));
    let fail = |what: &str, e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        format!("{what} {}: {e}", path.display())
    };
    let mut file = std::fs::File::create(&tmp).map_err(|e| fail("writing", e))?;
    file.write_all(text.as_bytes()).map_err(|e| fail("writing", e))?;
    file.sync_all().map_err(|e| fail("syncing", e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions()).map_err(|e| fail("keeping the permissions of", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| fail("replacing", e))?;
    Ok(())
}
