//! Labelled syntax trees for matching: the `T1`/`T2` of GumTree (Falleri et
//! al., "Fine-grained and accurate source code differencing", ASE 2014, §2).
//!
//! A tree-sitter-python tree is copied into an arena in preorder. Comments and
//! line continuations are dropped (they are formatting, not code). Anonymous
//! tokens (`(`, `+`, `for`, `:` …) do not become nodes; they are folded into
//! their parent's label, so `a + b` and `a - b` still differ. Leaves are
//! labelled with their source text. Every node carries the subtree size,
//! height (a leaf has height 1), an isomorphism hash (kind, label and the
//! children's hashes) and a shape hash (the same, but ignoring leaf labels).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use tree_sitter::Node as TsNode;

/// Index of a node in a [`Tree`]; ids follow preorder, so the subtree of `n`
/// is exactly the ids `n .. n + size(n)`.
pub(super) type Id = usize;

/// The few node kinds the propagation logic treats specially.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Module,
    Block,
    Identifier,
    Other,
}

impl Class {
    fn of(kind: &str) -> Class {
        match kind {
            "module" => Class::Module,
            "block" => Class::Block,
            "identifier" => Class::Identifier,
            _ => Class::Other,
        }
    }
}

/// One arena node.
pub(super) struct Node {
    kind: u16,
    class: Class,
    label: Box<str>,
    parent: Option<Id>,
    children: Vec<Id>,
    size: usize,
    height: u32,
    hash: u64,
    shape: u64,
    /// Byte offset of the first byte in the source.
    start: usize,
    /// Byte offset just past the last token that is not a comment.
    end: usize,
}

/// A labelled tree in preorder; id 0 is the root.
pub(super) struct Tree {
    nodes: Vec<Node>,
}

/// Where a statement left out of the tree (a propagation target) sat:
/// `index` kept children of `parent` come before it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    pub parent: Id,
    pub index: usize,
}

/// Copies `root` (a tree-sitter node of `src`) into a [`Tree`], leaving out
/// the subtrees of the nodes in `skip`; returns where each skipped node sat
/// (`None` if it is not inside `root`). One tree-cursor walk, no recursion,
/// so deep nesting cannot overflow the stack.
pub(super) fn build(root: TsNode<'_>, src: &str, skip: &[TsNode<'_>]) -> (Tree, Vec<Option<Slot>>) {
    let skip_ids: HashMap<usize, usize> = skip.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
    let mut slots = vec![None; skip.len()];
    let mut nodes: Vec<Node> = Vec::new();
    let mut own_end: Vec<usize> = Vec::new();
    // Per kind id: (class, whether its text is its label).
    let mut kinds: HashMap<u16, (Class, bool)> = HashMap::new();
    let mut parents: Vec<Id> = Vec::new();
    let mut cursor = root.walk();
    loop {
        let ts = cursor.node();
        let parent = parents.last().copied();
        let mut descend = false;
        if ts.is_extra() && parent.is_some() {
            // comments, line continuations
        } else if let Some(&k) = skip_ids.get(&ts.id()).filter(|_| parent.is_some()) {
            if let (Some(slot), Some(p)) = (slots.get_mut(k), parent) {
                *slot = Some(Slot { parent: p, index: nodes[p].children.len() });
            }
        } else if !ts.is_named() && parent.is_some() {
            if let Some(p) = parent {
                let label = &mut nodes[p].label;
                let mut joined = String::with_capacity(label.len() + ts.kind().len() + 1);
                joined.push_str(label);
                if !joined.is_empty() {
                    joined.push(' ');
                }
                joined.push_str(ts.kind());
                *label = joined.into_boxed_str();
                own_end[p] = own_end[p].max(ts.end_byte());
            }
        } else {
            let &mut (class, text_label) = kinds.entry(ts.kind_id()).or_insert_with(|| {
                let kind = ts.kind();
                (Class::of(kind), kind == "string_content")
            });
            let id = nodes.len();
            if let Some(p) = parent {
                nodes[p].children.push(id);
            }
            let leaf = text_label || ts.child_count() == 0;
            let label = if leaf { src.get(ts.start_byte()..ts.end_byte()).unwrap_or("") } else { "" };
            nodes.push(Node {
                kind: ts.kind_id(),
                class,
                label: label.into(),
                parent,
                children: Vec::new(),
                size: 1,
                height: 1,
                hash: 0,
                shape: 0,
                start: ts.start_byte(),
                end: ts.start_byte(),
            });
            own_end.push(if leaf { ts.end_byte() } else { ts.start_byte() });
            if !leaf && cursor.goto_first_child() {
                parents.push(id);
                descend = true;
            }
        }
        if descend {
            continue;
        }
        // Next node in preorder: a sibling, or a sibling of an ancestor.
        loop {
            if parents.is_empty() {
                break;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                parents.clear();
                break;
            }
            parents.pop();
        }
        if parents.is_empty() {
            break;
        }
    }
    // Children have larger ids than their parent: one reverse pass is a
    // postorder walk.
    for id in (0..nodes.len()).rev() {
        let node = &nodes[id];
        let mut size = 1;
        let mut height = 0;
        let mut end = own_end[id];
        let mut hash = start_hash(node.kind, &node.label);
        let mut shape = start_hash(node.kind, if node.children.is_empty() { "" } else { &node.label });
        for &c in &node.children {
            let child = &nodes[c];
            size += child.size;
            height = height.max(child.height);
            end = end.max(child.end);
            child.hash.hash(&mut hash);
            child.shape.hash(&mut shape);
        }
        let node = &mut nodes[id];
        node.size = size;
        node.height = height + 1;
        node.end = end;
        node.hash = hash.finish();
        node.shape = shape.finish();
    }
    (Tree { nodes }, slots)
}

fn start_hash(kind: u16, label: &str) -> DefaultHasher {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    label.hash(&mut h);
    h
}

impl Tree {
    /// The root's id.
    pub const ROOT: Id = 0;

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn kind(&self, id: Id) -> u16 {
        self.nodes[id].kind
    }

    pub fn class(&self, id: Id) -> Class {
        self.nodes[id].class
    }

    pub fn label(&self, id: Id) -> &str {
        &self.nodes[id].label
    }

    pub fn parent(&self, id: Id) -> Option<Id> {
        self.nodes[id].parent
    }

    pub fn children(&self, id: Id) -> &[Id] {
        &self.nodes[id].children
    }

    pub fn size(&self, id: Id) -> usize {
        self.nodes[id].size
    }

    pub fn height(&self, id: Id) -> u32 {
        self.nodes[id].height
    }

    pub fn hash(&self, id: Id) -> u64 {
        self.nodes[id].hash
    }

    pub fn shape(&self, id: Id) -> u64 {
        self.nodes[id].shape
    }

    pub fn start(&self, id: Id) -> usize {
        self.nodes[id].start
    }

    pub fn end(&self, id: Id) -> usize {
        self.nodes[id].end
    }

    /// Whether `id` is a proper descendant of `ancestor`.
    pub fn is_below(&self, id: Id, ancestor: Id) -> bool {
        ancestor < id && id < ancestor + self.size(ancestor)
    }

    /// Whether `id` is a statement: a child of a block or of the module.
    pub fn is_statement(&self, id: Id) -> bool {
        self.parent(id).is_some_and(|p| matches!(self.class(p), Class::Block | Class::Module))
    }

    /// The root's isomorphism hash with identifier labels passed through
    /// `rename` first; equal to [`Tree::hash`] of an old subtree exactly when
    /// that subtree is the renamed copy.
    pub fn hash_renamed(&self, rename: impl Fn(&str) -> Option<String>) -> u64 {
        let mut hashes = vec![0u64; self.nodes.len()];
        for id in (0..self.nodes.len()).rev() {
            let node = &self.nodes[id];
            let renamed = match node.class {
                Class::Identifier => rename(&node.label),
                _ => None,
            };
            let mut h = start_hash(node.kind, renamed.as_deref().unwrap_or(&node.label));
            for &c in &node.children {
                hashes[c].hash(&mut h);
            }
            hashes[id] = h.finish();
        }
        hashes.first().copied().unwrap_or(0)
    }
}
