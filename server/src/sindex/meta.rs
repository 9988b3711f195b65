//! Secondary-index definitions as cluster metadata: every change (a create, a delete, a
//! rename) carries a version, one above the highest this node knew, then the changing node's
//! id; every member keeps, per index name, its newest definition or deletion, and merges what
//! it receives by version (the newer change wins; receiving a change twice, or an older one,
//! changes nothing). Members send their whole catalog to each other after a local change and
//! on every committed view, so a member that was away learns the indexes created and deleted
//! meanwhile, and every member ends with the same definitions whatever order changes arrive
//! in — what Aerospike's system metadata guarantees, here without a principal.
//!
//! This file holds the catalog's state, its merge and its text form (the index file and the
//! fabric body share it). Plain Rust: no I/O, no clock; tested without sockets.

use std::collections::BTreeMap;
use std::sync::Arc;

use apogee_engine::sindex::IndexId;

use super::def::{Def, DefRef, Shape};

/// A change's version: ordered by counter, then by the id of the node that made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub counter: u64,
    pub origin: u64,
}

/// One name's newest change.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Index {
        name: String,
        shape: Shape,
        version: Version,
    },
    Deleted {
        name: String,
        version: Version,
    },
}

impl Entry {
    fn name(&self) -> &str {
        match self {
            Entry::Index { name, .. } | Entry::Deleted { name, .. } => name,
        }
    }

    fn version(&self) -> Version {
        match self {
            Entry::Index { version, .. } | Entry::Deleted { version, .. } => *version,
        }
    }

    /// Its line in the index file and in a fabric body.
    pub fn line(&self) -> String {
        match self {
            Entry::Index {
                name,
                shape,
                version,
            } => format!(
                "index\t{}\t{}\t{}",
                super::def::shape_fields(name, shape),
                version.counter,
                version.origin
            ),
            Entry::Deleted { name, version } => {
                format!("deleted\t{name}\t{}\t{}", version.counter, version.origin)
            }
        }
    }

    /// Reads a line written by [`Entry::line`].
    pub fn parse(line: &str) -> Result<Entry, String> {
        let (kind, rest) = line.split_once('\t').ok_or("no fields")?;
        let (body, origin) = rest.rsplit_once('\t').ok_or("no version")?;
        let (body, counter) = body.rsplit_once('\t').ok_or("no version")?;
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad version {s:?}"));
        let version = Version {
            counter: num(counter)?,
            origin: num(origin)?,
        };
        match kind {
            "index" => {
                let (name, shape) = super::def::parse_shape_fields(body)?;
                Ok(Entry::Index {
                    name,
                    shape,
                    version,
                })
            }
            "deleted" if !body.is_empty() && !body.contains('\t') => Ok(Entry::Deleted {
                name: body.to_string(),
                version,
            }),
            _ => Err(format!("unknown entry kind {kind:?}")),
        }
    }
}

/// The definitions of one namespace, with each name's newest change.
#[derive(Default, Clone)]
pub struct State {
    pub defs: Vec<DefRef>,
    /// The version of each definition in `defs`, by name.
    versions: BTreeMap<String, Version>,
    /// Deleted names and the version of their deletion.
    deleted: BTreeMap<String, Version>,
    /// The highest counter seen.
    counter_max: u64,
}

impl State {
    /// The version a change made here now gets.
    pub fn next_version(&self, node_id: u64) -> Version {
        Version {
            counter: self.counter_max + 1,
            origin: node_id,
        }
    }

    fn version_of(&self, name: &str) -> Option<Version> {
        self.versions
            .get(name)
            .copied()
            .max(self.deleted.get(name).copied())
    }

    /// Applies `entry` when it is newer than what `name` has; `new_id` names a definition
    /// that starts a new index. Returns whether anything changed. A definition whose shape
    /// another name has replaces that name (Aerospike renames the index: its entries stay).
    pub fn merge(
        &mut self,
        entry: Entry,
        mut new_id: impl FnMut() -> IndexId,
    ) -> Result<bool, String> {
        self.counter_max = self.counter_max.max(entry.version().counter);
        if self
            .version_of(entry.name())
            .is_some_and(|v| v >= entry.version())
        {
            return Ok(false);
        }
        match entry {
            Entry::Deleted { name, version } => {
                self.defs.retain(|d| d.name != name);
                self.versions.remove(&name);
                self.deleted.insert(name, version);
            }
            Entry::Index {
                name,
                shape,
                version,
            } => {
                // The index this one continues: its own name with the same shape, or the
                // same shape under another name (a rename).
                let same_shape = self.defs.iter().position(|d| d.shape == shape);
                if let Some(i) = same_shape {
                    let other = &self.defs[i].name;
                    let theirs = self.versions.get(other).copied().unwrap_or_default();
                    if *other != name && theirs > version {
                        // Renamed since, to `other`: this name is gone as of that rename.
                        self.versions.remove(&name);
                        self.defs.retain(|d| d.name != name);
                        self.deleted.insert(name, theirs);
                        return Ok(true);
                    }
                }
                self.deleted.remove(&name);
                let mut def = Def::new(0, name.clone(), shape)?;
                match same_shape {
                    Some(i) => {
                        let old = self.defs.remove(i);
                        def.id = old.id;
                        def.build = old.build.clone();
                        if old.name != name {
                            self.versions.remove(&old.name);
                            self.deleted.insert(old.name.clone(), version);
                        }
                    }
                    None => def.id = new_id(),
                }
                self.defs.retain(|d| d.name != name);
                self.versions.insert(name, version);
                self.defs.push(Arc::new(def));
            }
        }
        Ok(true)
    }

    /// Every name's newest change, as lines (definitions, then deletions).
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = (self.defs.iter())
            .map(|d| {
                Entry::Index {
                    name: d.name.clone(),
                    shape: d.shape.clone(),
                    version: self.versions.get(&d.name).copied().unwrap_or_default(),
                }
                .line()
            })
            .collect();
        out.extend(self.deleted.iter().map(|(name, version)| {
            Entry::Deleted {
                name: name.clone(),
                version: *version,
            }
            .line()
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sindex::def::{DataType, IndexType};

    fn shape(bin: &str) -> Shape {
        Shape {
            set: None,
            bin: bin.into(),
            data: DataType::Numeric,
            itype: IndexType::Default,
            ctx: None,
            exp: None,
        }
    }

    fn v(counter: u64, origin: u64) -> Version {
        Version { counter, origin }
    }

    fn index(name: &str, bin: &str, version: Version) -> Entry {
        Entry::Index {
            name: name.into(),
            shape: shape(bin),
            version,
        }
    }

    fn names(s: &State) -> Vec<String> {
        let mut n: Vec<_> = s.defs.iter().map(|d| d.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn members_end_alike_whatever_order_changes_arrive_in() {
        let changes = vec![
            index("a", "x", v(1, 1)),
            index("b", "y", v(2, 2)),
            Entry::Deleted {
                name: "a".into(),
                version: v(3, 1),
            },
            index("a", "z", v(4, 2)),
            index("c", "y", v(5, 1)), // renames b
        ];
        let mut orders = vec![changes.clone()];
        let mut rev = changes.clone();
        rev.reverse();
        orders.push(rev);
        orders.push(vec![
            changes[2].clone(),
            changes[4].clone(),
            changes[0].clone(),
            changes[3].clone(),
            changes[1].clone(),
            changes[0].clone(),
        ]);
        let mut results = Vec::new();
        for order in orders {
            let mut s = State::default();
            let mut id = 0;
            for e in order {
                s.merge(e, || {
                    id += 1;
                    id
                })
                .unwrap();
            }
            let mut lines = s.lines();
            lines.sort();
            results.push((names(&s), lines));
        }
        assert_eq!(results[0].0, vec!["a".to_string(), "c".to_string()]);
        assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    }

    #[test]
    fn an_older_or_repeated_change_changes_nothing_and_lines_read_back() {
        let mut s = State::default();
        assert!(s.merge(index("a", "x", v(2, 1)), || 1).unwrap());
        assert!(!s.merge(index("a", "x", v(2, 1)), || 2).unwrap());
        assert!(!s
            .merge(
                Entry::Deleted {
                    name: "a".into(),
                    version: v(1, 9)
                },
                || 3
            )
            .unwrap());
        assert_eq!(s.defs[0].id, 1);
        assert_eq!(s.next_version(7), v(3, 7));
        for line in s.lines() {
            assert_eq!(Entry::parse(&line).unwrap().line(), line);
        }
        let gone = Entry::Deleted {
            name: "q".into(),
            version: v(1, 1),
        };
        assert_eq!(Entry::parse(&gone.line()).unwrap(), gone);
        assert!(Entry::parse("index\ta").is_err());
        assert!(Entry::parse("other\ta\t1\t2").is_err());
    }
}
