//! A byte-wise radix tree of path prefixes, walked once per request.

/// One node: the bytes of its edge, what is stored at its end, and its children sorted by
/// their first byte.
#[derive(Debug, Clone)]
struct Node<T> {
    label: Box<[u8]>,
    value: Option<T>,
    children: Vec<Node<T>>,
}

impl<T> Node<T> {
    fn new(label: &[u8]) -> Self {
        Node {
            label: label.into(),
            value: None,
            children: Vec::new(),
        }
    }
}

/// Prefixes → values; [`PrefixTree::matches`] yields the values of every stored prefix of a
/// path, longest first.
#[derive(Debug, Clone)]
pub struct PrefixTree<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for PrefixTree<T> {
    fn default() -> Self {
        PrefixTree {
            root: Node::new(b""),
            len: 0,
        }
    }
}

fn common(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// At most this many matching prefixes are kept on the stack per lookup; deeper nesting
/// falls back to the heap.
const INLINE: usize = 16;

impl<T> PrefixTree<T> {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value stored at exactly `key`, created with `make` when absent.
    pub fn entry(&mut self, key: &[u8], make: impl FnOnce() -> T) -> &mut T {
        let mut node = &mut self.root;
        let mut rest = key;
        loop {
            if rest.is_empty() {
                if node.value.is_none() {
                    self.len += 1;
                    node.value = Some(make());
                }
                return node.value.as_mut().expect("just set");
            }
            let pos = node.children.binary_search_by(|c| c.label[0].cmp(&rest[0]));
            match pos {
                Err(at) => {
                    node.children.insert(at, Node::new(rest));
                    node = &mut node.children[at];
                    rest = b"";
                }
                Ok(at) => {
                    let shared = common(&node.children[at].label, rest);
                    if shared < node.children[at].label.len() {
                        // Split the child's edge at the shared part.
                        let child = &mut node.children[at];
                        let tail = Node {
                            label: child.label[shared..].into(),
                            value: child.value.take(),
                            children: std::mem::take(&mut child.children),
                        };
                        child.label = rest[..shared].into();
                        child.children.push(tail);
                    }
                    node = &mut node.children[at];
                    rest = &rest[shared..];
                }
            }
        }
    }

    /// Calls `f` with the value of every stored prefix of `path`, longest first, until `f`
    /// returns `Some`.
    pub fn find_map<'a, R>(
        &'a self,
        path: &[u8],
        mut f: impl FnMut(&'a T) -> Option<R>,
    ) -> Option<R> {
        let mut inline: [Option<&'a T>; INLINE] = [None; INLINE];
        let mut spill: Vec<&'a T> = Vec::new();
        let mut found = 0usize;
        let mut push = |v: &'a T, found: &mut usize| {
            if *found < INLINE {
                inline[*found] = Some(v);
            } else {
                spill.push(v);
            }
            *found += 1;
        };
        let mut node = &self.root;
        let mut rest = path;
        if let Some(v) = &node.value {
            push(v, &mut found);
        }
        while let Some(first) = rest.first() {
            let Ok(at) = node.children.binary_search_by(|c| c.label[0].cmp(first)) else {
                break;
            };
            let child = &node.children[at];
            if !rest.starts_with(&child.label) {
                break;
            }
            rest = &rest[child.label.len()..];
            node = child;
            if let Some(v) = &node.value {
                push(v, &mut found);
            }
        }
        while let Some(v) = spill.pop() {
            if let Some(r) = f(v) {
                return Some(r);
            }
        }
        for v in inline[..found.min(INLINE)].iter().rev().flatten() {
            if let Some(r) = f(v) {
                return Some(r);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(t: &PrefixTree<&'static str>, path: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        t.find_map(path.as_bytes(), |v| {
            out.push(*v);
            None::<()>
        });
        out
    }

    #[test]
    fn longest_prefix_first() {
        let mut t = PrefixTree::default();
        for p in ["/", "/foo", "/foo/", "/foobar", "/fo", "/bar/baz", ""] {
            *t.entry(p.as_bytes(), || "") = p;
        }
        assert_eq!(t.len, 7);
        assert_eq!(all(&t, "/foo/x"), ["/foo/", "/foo", "/fo", "/", ""]);
        assert_eq!(all(&t, "/foobar2"), ["/foobar", "/foo", "/fo", "/", ""]);
        assert_eq!(all(&t, "/bar/ba"), ["/", ""]);
        assert_eq!(all(&t, "x"), [""]);
        // Re-inserting finds the same slot.
        *t.entry(b"/foo", || "new") = "again";
        assert_eq!(t.len, 7);
        assert_eq!(all(&t, "/foo"), ["again", "/fo", "/", ""]);
    }

    #[test]
    fn deep_nesting_spills_to_the_heap_in_order() {
        let mut t = PrefixTree::default();
        let path: String = "/a".repeat(40);
        for i in 1..=path.len() {
            *t.entry(&path.as_bytes()[..i], || 0) = i;
        }
        let mut seen = Vec::new();
        t.find_map(path.as_bytes(), |v| {
            seen.push(*v);
            None::<()>
        });
        let want: Vec<usize> = (1..=path.len()).rev().collect();
        assert_eq!(seen, want);
    }
}
