//! The recording runtime as a state machine with no I/O (DESIGN.md §4, §5).
//!
//! A [`Recorder`] holds the loop stack of one run. Each iteration of a named
//! loop is a [`LoopFrame`] whose `ctx_id` is derived from its parent's
//! `ctx_id`, the loop name and the 0-based iteration, so the same iteration of
//! the same loop gets the same `ctx_id` in a forward run and in its replay:
//! replayed records attach to the original run's loop context without a
//! lookup.

use crate::run::splitmix64;
use crate::{Error, Result, Value};
use serde::{Deserialize, Serialize};
use rustc_hash::FxHashMap;

/// Where a record came from, stored in the `source` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// Logged live by the run.
    Forward,
    /// Recovered later by hindsight replay.
    Replay,
}

impl Source {
    /// `"forward"` or `"replay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Forward => "forward",
            Source::Replay => "replay",
        }
    }
}

/// The context id of records logged outside any loop (run level).
pub const RUN_LEVEL_CTX: u64 = 0;

/// One iteration of a named loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopFrame {
    /// This frame's id; never [`RUN_LEVEL_CTX`].
    pub ctx_id: u64,
    /// The enclosing frame's id, or [`RUN_LEVEL_CTX`] for an outermost loop.
    pub p_ctx_id: u64,
    /// The loop's name (`epoch`, `step`, `document`, …).
    pub loop_name: String,
    /// 0-based iteration index.
    pub iteration: i64,
    /// The iterated value's text when it differs from the index (a document
    /// name); `None` otherwise.
    pub loop_value: Option<String>,
}

/// The interned id of a value name within one [`Recorder`].
pub type NameId = u32;

/// One `log(name, value)` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The innermost enclosing frame, or [`RUN_LEVEL_CTX`].
    pub ctx_id: u64,
    /// The value name, interned (see [`Recorder::names`]).
    pub name: NameId,
    /// The value.
    pub value: Value,
}

#[derive(Debug)]
struct Level {
    name: String,
    frame: Option<LoopFrame>,
}

/// The loop stack and name table of one run.
#[derive(Debug, Default)]
pub struct Recorder {
    stack: Vec<Level>,
    /// [`Recorder::current_ctx`], kept up to date by the loop calls (it is
    /// read on every record).
    current: u64,
    names: Vec<String>,
    index: FxHashMap<String, NameId>,
}

/// Derives a frame's `ctx_id` from its parent, loop name and iteration.
/// Deterministic across processes and platforms; never returns 0.
pub fn derive_ctx_id(p_ctx_id: u64, loop_name: &str, iteration: i64) -> u64 {
    // FNV-1a over the name, then SplitMix64 over (parent, name hash, iteration).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in loop_name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let id = splitmix64(splitmix64(p_ctx_id ^ h) ^ (iteration as u64));
    if id == RUN_LEVEL_CTX { 1 } else { id }
}

impl Recorder {
    /// An empty recorder (no open loop, no names).
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Interns a value name.
    ///
    /// # Errors
    /// [`Error::EmptyName`] when `name` is empty. Any other string (quotes,
    /// spaces, unicode, the word `value`) is an ordinary name.
    pub fn intern(&mut self, name: &str) -> Result<NameId> {
        if let Some(id) = self.index.get(name) {
            return Ok(*id);
        }
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        let id = NameId::try_from(self.names.len()).map_err(|_| Error::LoopMisuse("more than 2^32 distinct names".into()))?;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        Ok(id)
    }

    /// The name table: `names()[id]` is the name interned as `id`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Opens a loop named `name` (no iteration is current until
    /// [`Recorder::iteration`]).
    ///
    /// # Errors
    /// [`Error::EmptyLoopName`] for an empty name.
    pub fn loop_enter(&mut self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::EmptyLoopName);
        }
        self.stack.push(Level { name: name.to_owned(), frame: None });
        Ok(())
    }

    /// Starts iteration `index` (0-based) of the innermost open loop, with the
    /// iterated value's text when it differs from the index. Returns the new
    /// frame, to be persisted.
    ///
    /// # Errors
    /// [`Error::LoopMisuse`] when no loop is open.
    pub fn iteration(&mut self, index: i64, value: Option<String>) -> Result<LoopFrame> {
        let parent = self.parent_ctx();
        let level = self
            .stack
            .last_mut()
            .ok_or_else(|| Error::LoopMisuse("iteration() called with no open loop".into()))?;
        let value = value.filter(|v| *v != index.to_string());
        let frame = LoopFrame {
            ctx_id: derive_ctx_id(parent, &level.name, index),
            p_ctx_id: parent,
            loop_name: level.name.clone(),
            iteration: index,
            loop_value: value,
        };
        level.frame = Some(frame.clone());
        self.current = frame.ctx_id;
        Ok(frame)
    }

    /// Closes the innermost loop, which must be named `name`.
    ///
    /// # Errors
    /// [`Error::LoopMisuse`] when no loop is open or the innermost is another.
    pub fn loop_exit(&mut self, name: &str) -> Result<()> {
        match self.stack.last() {
            Some(l) if l.name == name => {
                self.stack.pop();
                self.current = self.innermost_ctx();
                Ok(())
            }
            Some(l) => Err(Error::LoopMisuse(format!("loop_exit({name:?}) while loop {:?} is innermost", l.name))),
            None => Err(Error::LoopMisuse(format!("loop_exit({name:?}) with no open loop"))),
        }
    }

    /// Number of open loops.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The current iteration of each open loop, outermost first:
    /// `(loop name, 0-based iteration)`; a loop with no iteration yet is left out.
    pub fn loop_path(&self) -> Vec<(String, i64)> {
        self.stack
            .iter()
            .filter_map(|l| l.frame.as_ref().map(|f| (l.name.clone(), f.iteration)))
            .collect()
    }

    fn parent_ctx(&self) -> u64 {
        let n = self.stack.len();
        if n < 2 {
            return RUN_LEVEL_CTX;
        }
        self.stack[..n - 1]
            .iter()
            .rev()
            .find_map(|l| l.frame.as_ref().map(|f| f.ctx_id))
            .unwrap_or(RUN_LEVEL_CTX)
    }

    /// The `ctx_id` records logged now attach to.
    pub fn current_ctx(&self) -> u64 {
        self.current
    }

    fn innermost_ctx(&self) -> u64 {
        self.stack
            .iter()
            .rev()
            .find_map(|l| l.frame.as_ref().map(|f| f.ctx_id))
            .unwrap_or(RUN_LEVEL_CTX)
    }

    /// A record of `value` under the interned `name` in the current context.
    pub fn record(&self, name: NameId, value: Value) -> Record {
        Record { ctx_id: self.current_ctx(), name, value }
    }

    /// Drops the loop stack (a new run starts at run level); names stay interned.
    pub fn reset_loops(&mut self) {
        self.stack.clear();
        self.current = RUN_LEVEL_CTX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nested_loops_chain_to_the_outermost() {
        let mut r = Recorder::new();
        let n = r.intern("x").unwrap();
        r.loop_enter("epoch").unwrap();
        let e = r.iteration(1, Some("1".into())).unwrap();
        assert_eq!(e.loop_value, None, "a value equal to the index is dropped");
        r.loop_enter("step").unwrap();
        let s = r.iteration(2, None).unwrap();
        r.loop_enter("micro").unwrap();
        let m = r.iteration(0, Some("a".into())).unwrap();
        assert_eq!((e.p_ctx_id, s.p_ctx_id, m.p_ctx_id), (RUN_LEVEL_CTX, e.ctx_id, s.ctx_id));
        assert_eq!(r.record(n, Value::Int(1)).ctx_id, m.ctx_id);
        assert_eq!(r.loop_path(), vec![("epoch".into(), 1), ("step".into(), 2), ("micro".into(), 0)]);
        r.loop_exit("micro").unwrap();
        assert_eq!(r.current_ctx(), s.ctx_id);
        assert!(r.loop_exit("epoch").is_err());
        r.loop_exit("step").unwrap();
        r.loop_exit("epoch").unwrap();
        assert_eq!(r.current_ctx(), RUN_LEVEL_CTX);
        // Same path, same id: replay attaches to the original context.
        assert_eq!(derive_ctx_id(e.ctx_id, "step", 2), s.ctx_id);
        assert_ne!(derive_ctx_id(e.ctx_id, "step", 3), s.ctx_id);
    }

    #[test]
    fn names_are_data() {
        let mut r = Recorder::new();
        for name in ["value", "say \"hi\"", "drop table logs; --", "ünï côdé", "a b"] {
            let id = r.intern(name).unwrap();
            assert_eq!(r.names()[id as usize], name);
        }
        assert_eq!(r.intern(""), Err(Error::EmptyName));
    }
}
