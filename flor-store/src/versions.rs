//! Git versions: each run's code snapshot on the shadow branch
//! `flor.<branch>` (DESIGN.md §6 "Git", docs/FORMAT.md "versions").
//!
//! A snapshot is a commit whose parents are the previous snapshot on the
//! shadow branch and the user's `HEAD`, built from an in-memory index: the
//! user's `HEAD`, branch, index and working tree are never touched.
//! Git-ignored files and files over the size limit are left out (and
//! reported); the sealed segments and manifests in `.flor/` are always in.
//! The commit message carries trailers (`Flor-Tstamp`, `Flor-Run`,
//! `Flor-Filename`, `Flor-Projid`) from which [`list`] rebuilds the
//! `versions` table, so a clone of the repository carries its history.

use crate::schema;
use crate::wal::RunMeta;
use crate::{Error, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use git2::{IndexEntry, IndexTime, Oid, Repository};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default largest file put into a snapshot: 10 MiB.
pub const DEFAULT_SIZE_LIMIT: u64 = 10 * 1024 * 1024;

/// Why a file was left out of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Matched by `.gitignore` (a directory counts once).
    Ignored,
    /// Larger than the size limit (bytes).
    TooLarge(u64),
}

/// One file or directory left out of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Path relative to the repository root.
    pub path: String,
    /// Why.
    pub reason: SkipReason,
}

/// A snapshot commit that was made.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The commit id (40 hex digits).
    pub commit_id: String,
    /// The user branch it belongs to (`main`; a short commit id when detached).
    pub branch: String,
    /// The shadow branch it was committed to (`flor.main`).
    pub shadow_branch: String,
    /// What was left out.
    pub skipped: Vec<Skipped>,
}

fn git_err(root: &Path) -> impl Fn(git2::Error) -> Error + '_ {
    move |e| Error::Git {
        path: root.to_path_buf(),
        detail: e.message().to_owned(),
    }
}

/// Opens the repository whose work tree is `root`.
///
/// # Errors
/// [`Error::NotARepository`] when there is none.
pub fn open_repo(root: &Path) -> Result<Repository> {
    Repository::discover(root).map_err(|_| Error::NotARepository {
        path: root.to_path_buf(),
    })
}

/// The user's current branch name: the branch `HEAD` points at (born or
/// unborn), or the 12-digit short id of the commit when `HEAD` is detached.
///
/// # Errors
/// [`Error::Git`] when `HEAD` cannot be read.
pub fn current_branch(repo: &Repository, root: &Path) -> Result<String> {
    if repo.head_detached().map_err(git_err(root))? {
        let head = repo.head().map_err(git_err(root))?;
        let id = head.target().map(|o| o.to_string()).unwrap_or_default();
        return Ok(id.chars().take(12).collect());
    }
    let head = repo.find_reference("HEAD").map_err(git_err(root))?;
    let target = head
        .symbolic_target()
        .ok()
        .flatten()
        .unwrap_or("refs/heads/main");
    Ok(target
        .strip_prefix("refs/heads/")
        .unwrap_or(target)
        .to_owned())
}

/// Blobs written ahead of a snapshot: path relative to the root → blob id.
///
/// The seal fills it from its threads ([`Blobs::write`]) with each segment's
/// bytes while they are still in memory, so [`snapshot_with`] neither reads
/// those files back nor compresses them again.
#[derive(Debug, Default)]
pub struct Blobs(std::sync::Mutex<Vec<(String, Oid)>>);

impl Blobs {
    /// Writes `bytes` as a blob of the repository at `root` and remembers it
    /// as the content of `rel`. Thread-safe.
    ///
    /// # Errors
    /// [`Error::NotARepository`]; [`Error::Git`] when the object cannot be written.
    pub fn write(&self, root: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
        let repo = open_repo(root)?;
        let oid = write_stored_blob(&repo, root, bytes)?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((rel.to_owned(), oid));
        Ok(())
    }

    fn get(&self, rel: &str) -> Option<Oid> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(r, _)| r == rel)
            .map(|(_, o)| *o)
    }
}

/// Writes `bytes` as a loose blob whose zlib stream uses stored (level 0)
/// blocks: a sealed segment is already zstd-compressed, and deflating it
/// again (libgit2 always deflates, at level 1 or more) cost about a third of
/// a commit of 1,000,000 records. The object is an ordinary loose object
/// (`objects/xx/yyyy…`, zlib of `blob <len>\0<bytes>`, git's object
/// format), written to a temporary name and renamed; an existing object is
/// kept.
///
/// # Errors
/// [`Error::Git`] when hashing fails; [`Error::Io`] naming the object file.
fn write_stored_blob(repo: &Repository, root: &Path, bytes: &[u8]) -> Result<Oid> {
    use std::io::Write;
    let oid = Oid::hash_object(git2::ObjectType::Blob, bytes).map_err(git_err(root))?;
    let odb = repo.odb().map_err(git_err(root))?;
    if odb.exists(oid) {
        return Ok(oid);
    }
    let hex = oid.to_string();
    let dir = repo.commondir().join("objects").join(&hex[..2]);
    let path = dir.join(&hex[2..]);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::Io { path: p, source: e }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = dir.join(format!("tmp_flor_{}_{}", std::process::id(), &hex[2..]));
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut z = flate2::write::ZlibEncoder::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        flate2::Compression::none(),
    );
    z.write_all(format!("blob {}\0", bytes.len()).as_bytes())
        .map_err(io(&tmp))?;
    z.write_all(bytes).map_err(io(&tmp))?;
    let file = z
        .finish()
        .map_err(io(&tmp))?
        .into_inner()
        .map_err(|e| Error::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o444))
        .map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(oid)
}

struct Builder<'r> {
    repo: &'r Repository,
    blobs: &'r Blobs,
    root: &'r Path,
    index: git2::Index,
    prev_tree: Option<git2::Tree<'r>>,
    size_limit: u64,
    skipped: Vec<Skipped>,
}

impl Builder<'_> {
    fn add(&mut self, rel: &str, oid: Oid, mode: u32) -> Result<()> {
        let path = rel.as_bytes().to_vec();
        let entry = IndexEntry {
            ctime: IndexTime::new(0, 0),
            mtime: IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            file_size: 0,
            id: oid,
            flags: path.len().min(0xfff) as u16,
            flags_extended: 0,
            path,
        };
        self.index.add(&entry).map_err(git_err(self.root))
    }

    fn walk(&mut self, dir: &Path) -> Result<()> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let Ok(rel) = path.strip_prefix(self.root) else {
                continue;
            };
            let Some(rel) = rel.to_str().map(str::to_owned) else {
                continue;
            };
            if rel == ".git" || rel == ".flor" {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if self.repo.is_path_ignored(Path::new(&rel)).unwrap_or(false) {
                self.skipped.push(Skipped {
                    path: rel,
                    reason: SkipReason::Ignored,
                });
                continue;
            }
            if ft.is_dir() {
                if path.join(".git").exists() {
                    continue; // a nested repository: not ours to snapshot
                }
                self.walk(&path)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e,
                })?;
                let oid = self
                    .repo
                    .blob(target.to_string_lossy().as_bytes())
                    .map_err(git_err(self.root))?;
                self.add(&rel, oid, 0o120000)?;
            } else if ft.is_file() {
                let meta = e.metadata().map_err(|err| Error::Io {
                    path: path.clone(),
                    source: err,
                })?;
                if meta.len() > self.size_limit {
                    self.skipped.push(Skipped {
                        path: rel,
                        reason: SkipReason::TooLarge(meta.len()),
                    });
                    continue;
                }
                use std::os::unix::fs::PermissionsExt;
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o100755
                } else {
                    0o100644
                };
                let oid = self.repo.blob_path(&path).map_err(git_err(self.root))?;
                self.add(&rel, oid, mode)?;
            }
        }
        Ok(())
    }

    /// Adds the sealed files in `.flor/<sub>/`, reusing blob ids from the
    /// previous snapshot (sealed files never change).
    fn add_sealed(&mut self, sub: &str) -> Result<()> {
        let dir = self.root.join(".flor").join(sub);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut names: Vec<_> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            if name.contains(".tmp.") {
                continue;
            }
            let rel = format!(".flor/{sub}/{name}");
            let known = self.blobs.get(&rel).or_else(|| {
                self.prev_tree
                    .as_ref()
                    .and_then(|t| t.get_path(Path::new(&rel)).ok())
                    .map(|e| e.id())
            });
            let oid = match known {
                Some(o) => o,
                None => self
                    .repo
                    .blob_path(&dir.join(&name))
                    .map_err(git_err(self.root))?,
            };
            self.add(&rel, oid, 0o100644)?;
        }
        Ok(())
    }
}

/// Commits a snapshot of the work tree for the run `meta` to
/// `flor.<current branch>`, without touching `HEAD`, the index or the work
/// tree. Concurrent snapshots of one branch retry until each is on the chain.
///
/// # Errors
/// [`Error::NotARepository`] outside a repository; [`Error::Git`] when
/// libgit2 fails; [`Error::Io`] when a file cannot be read.
pub fn snapshot(root: &Path, meta: &RunMeta, size_limit: u64) -> Result<Snapshot> {
    snapshot_with(root, meta, size_limit, &Blobs::default())
}

/// [`snapshot`], taking the blob of every path in `blobs` as written.
///
/// # Errors
/// As [`snapshot`].
pub fn snapshot_with(
    root: &Path,
    meta: &RunMeta,
    size_limit: u64,
    blobs: &Blobs,
) -> Result<Snapshot> {
    let repo = open_repo(root)?;
    let branch = current_branch(&repo, root)?;
    let shadow = format!("flor.{branch}");
    let refname = format!("refs/heads/{shadow}");
    let sig = repo
        .signature()
        .or_else(|_| git2::Signature::now("flordb", "flordb@localhost"))
        .map_err(git_err(root))?;
    let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let mut last_err = None;
    for attempt in 0..16u64 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(attempt * 5));
        }
        match snapshot_attempt(
            &repo,
            root,
            meta,
            size_limit,
            blobs,
            &refname,
            &sig,
            head.as_ref(),
        ) {
            Ok(Some((commit_id, skipped))) => {
                return Ok(Snapshot {
                    commit_id,
                    branch,
                    shadow_branch: shadow,
                    skipped,
                })
            }
            Ok(None) => {} // another writer moved the branch: build on its commit
            // libgit2 re-reads every object it puts in a tree; under several
            // processes committing at once that read has failed transiently
            // in CI ("invalid object specified"): retry, report the last one.
            Err(e @ Error::Git { .. }) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Git {
        path: root.into(),
        detail: format!("could not update {refname}: another writer kept moving it"),
    }))
}

/// One try of [`snapshot_with`]: `Ok(None)` when the branch moved under it.
#[allow(clippy::too_many_arguments)]
fn snapshot_attempt(
    repo: &Repository,
    root: &Path,
    meta: &RunMeta,
    size_limit: u64,
    blobs: &Blobs,
    refname: &str,
    sig: &git2::Signature<'_>,
    head: Option<&git2::Commit<'_>>,
) -> Result<Option<(String, Vec<Skipped>)>> {
    let prev = repo
        .find_reference(refname)
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let mut b = Builder {
        repo,
        blobs,
        root,
        index: git2::Index::new().map_err(git_err(root))?,
        prev_tree: prev.as_ref().and_then(|c| c.tree().ok()),
        size_limit,
        skipped: Vec::new(),
    };
    b.walk(root)?;
    let gi = root.join(".flor/.gitignore");
    if gi.exists() {
        let oid = repo.blob_path(&gi).map_err(git_err(root))?;
        b.add(".flor/.gitignore", oid, 0o100644)?;
    }
    b.add_sealed("segments")?;
    b.add_sealed("manifests")?;
    let tree_id = b.index.write_tree_to(repo).map_err(git_err(root))?;
    let tree = repo.find_tree(tree_id).map_err(git_err(root))?;
    let mut parents = Vec::new();
    if let Some(p) = &prev {
        parents.push(p);
    }
    if let Some(h) = &head {
        if prev.as_ref().map(|p| p.id()) != Some(h.id()) {
            parents.push(h);
        }
    }
    let msg = format!(
        "flor: {} run {}\n\nFlor-Projid: {}\nFlor-Tstamp: {}\nFlor-Run: {:016x}\nFlor-Filename: {}\nFlor-Head: {}\n",
        meta.filename,
        meta.key.tstamp,
        meta.projid,
        meta.key.tstamp,
        meta.key.run_id,
        meta.filename,
        head.as_ref().map(|h| h.id().to_string()).unwrap_or_default()
    );
    let oid = repo
        .commit(None, sig, sig, &msg, &tree, &parents)
        .map_err(git_err(root))?;
    let updated = match &prev {
        Some(p) => repo
            .reference_matching(refname, oid, true, p.id(), "flor snapshot")
            .is_ok(),
        None => repo.reference(refname, oid, false, "flor snapshot").is_ok(),
    };
    Ok(updated.then(|| (oid.to_string(), b.skipped)))
}

/// Schema of the `versions` table: `projid, tstamp, run_id, filename,
/// commit_id (40 hex), branch (the user's branch)`.
pub fn versions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("projid", DataType::Utf8, false),
        Field::new(
            "tstamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("filename", DataType::Utf8, false),
        Field::new("commit_id", DataType::Utf8, false),
        Field::new("branch", DataType::Utf8, false),
    ]))
}

/// One snapshot found on a shadow branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// Project id.
    pub projid: String,
    /// Run `tstamp` (µs).
    pub tstamp: i64,
    /// Run id, 16 hex digits.
    pub run_id: String,
    /// Script path.
    pub filename: String,
    /// Snapshot commit id.
    pub commit_id: String,
    /// User branch.
    pub branch: String,
}

/// Every snapshot on every `flor.*` branch, oldest first.
///
/// # Errors
/// [`Error::NotARepository`]; [`Error::Git`] when the history cannot be read.
pub fn rows(root: &Path) -> Result<Vec<VersionRow>> {
    let repo = open_repo(root)?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let branches = repo
        .branches(Some(git2::BranchType::Local))
        .map_err(git_err(root))?;
    for b in branches.flatten() {
        let Ok(Some(name)) = b.0.name().map(|n| n.map(str::to_owned)) else {
            continue;
        };
        let Some(user_branch) = name.strip_prefix("flor.") else {
            continue;
        };
        let mut commit = b.0.get().peel_to_commit().ok();
        while let Some(c) = commit {
            if !seen.insert(c.id()) {
                break;
            }
            let msg = c.message().unwrap_or("");
            let trailer = |k: &str| {
                msg.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(t), Some(run), Some(f)) = (
                trailer("Flor-Tstamp:"),
                trailer("Flor-Run:"),
                trailer("Flor-Filename:"),
            ) {
                if let Ok(tstamp) = t.parse() {
                    out.push(VersionRow {
                        projid: trailer("Flor-Projid:").unwrap_or_default(),
                        tstamp,
                        run_id: run,
                        filename: f,
                        commit_id: c.id().to_string(),
                        branch: user_branch.to_owned(),
                    });
                }
            }
            commit = if c.message().is_ok_and(|m| m.contains("Flor-Tstamp:")) {
                c.parent(0).ok()
            } else {
                None
            };
        }
    }
    out.sort_by(|a, b| (a.tstamp, &a.run_id).cmp(&(b.tstamp, &b.run_id)));
    Ok(out)
}

/// [`rows`] as an Arrow batch ([`versions_schema`]).
///
/// # Errors
/// As [`rows`]; [`Error::Format`] if Arrow rejects the arrays (a bug).
pub fn list(root: &Path) -> Result<RecordBatch> {
    let r = rows(root)?;
    let s = |f: fn(&VersionRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(r.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        s(|v| &v.projid),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            r.iter().map(|v| v.tstamp),
        )),
        s(|v| &v.run_id),
        s(|v| &v.filename),
        s(|v| &v.commit_id),
        s(|v| &v.branch),
    ];
    let _ = schema::FORMAT_VERSION;
    RecordBatch::try_new(versions_schema(), cols).map_err(|e| Error::Format {
        path: PathBuf::from("versions"),
        detail: e.to_string(),
    })
}

/// The bytes of `path` (relative to the repository root) in the snapshot
/// `commit_id`, read from git objects.
///
/// # Errors
/// [`Error::Git`] when the commit or the path does not exist there.
pub fn read_file(root: &Path, commit_id: &str, path: &str) -> Result<Vec<u8>> {
    let repo = open_repo(root)?;
    let oid = Oid::from_str(commit_id).map_err(git_err(root))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(git_err(root))?;
    let entry = tree.get_path(Path::new(path)).map_err(|e| Error::Git {
        path: root.to_path_buf(),
        detail: format!("{path} is not in snapshot {commit_id}: {}", e.message()),
    })?;
    let blob = repo.find_blob(entry.id()).map_err(git_err(root))?;
    Ok(blob.content().to_vec())
}

/// Writes the tree of `commit_id` into `dest` (a fresh directory) from git
/// objects, without checking anything out in the user's repository. The
/// snapshot's `.flor/` is left out (the store stays where it is).
///
/// # Errors
/// [`Error::Git`] for an unknown commit; [`Error::Io`] when `dest` cannot be written.
pub fn materialize(root: &Path, commit_id: &str, dest: &Path) -> Result<()> {
    let repo = open_repo(root)?;
    let oid = Oid::from_str(commit_id).map_err(git_err(root))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(git_err(root))?;
    let mut failure: Option<Error> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return git2::TreeWalkResult::Skip;
        };
        if dir.is_empty() && name == ".flor" {
            return git2::TreeWalkResult::Skip;
        }
        let path = dest.join(dir).join(name);
        let r = match entry.kind() {
            Some(git2::ObjectType::Tree) => std::fs::create_dir_all(&path).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            }),
            Some(git2::ObjectType::Blob) => repo
                .find_blob(entry.id())
                .map_err(git_err(root))
                .and_then(|b| {
                    std::fs::write(&path, b.content()).map_err(|e| Error::Io {
                        path: path.clone(),
                        source: e,
                    })
                }),
            _ => Ok(()),
        };
        match r {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .map_err(git_err(root))
    .or_else(|e| if failure.is_some() { Ok(()) } else { Err(e) })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
