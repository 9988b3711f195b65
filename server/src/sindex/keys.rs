//! What a record holds in an index: the values a definition picks from it (its bin or
//! expression, down its CDT context, then the element, list items, map keys or map values,
//! of the index's data type) and the key each is kept under. Queries use the same code to
//! re-check a record they read, so an index entry and a query's test can never disagree.
//!
//! Pure functions of a record and a definition; never panics on any stored value.

use std::sync::Arc;

use apogee_engine::sindex::{IndexId, IndexKey, Indexer};
use apogee_engine::Record;
use apogee_ops::geo;
use apogee_ops::Value;

use super::cells::GeoCover;
use super::def::{DataType, Def, IndexType};

/// Particle types (spec §4.2) an index reads.
mod ptype {
    pub const INTEGER: u8 = 1;
    pub const STRING: u8 = 3;
    pub const BLOB: u8 = 4;
    pub const MAP: u8 = 19;
    pub const LIST: u8 = 20;
    pub const GEOJSON: u8 = 23;
}

/// One indexed value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Indexed {
    Int(i64),
    /// A string's or a blob's bytes.
    Bytes(Vec<u8>),
    /// A GeoJSON value's shape.
    Geo(geo::Shape),
}

impl Indexed {
    /// Appends the keys this value is kept under: the integer itself; a seeded 64-bit hash
    /// of a string's or blob's bytes (queries re-check the value); a GeoJSON point's leaf S2
    /// cell, a region's covering cells (`cover`: the namespace's `geo2dsphere-within`).
    pub fn keys(&self, cover: &GeoCover, out: &mut Vec<IndexKey>) {
        match self {
            Indexed::Int(i) => out.push(*i),
            Indexed::Bytes(b) => out.push(hash_key(b)),
            Indexed::Geo(shape) => out.extend(cover.keys_of(shape)),
        }
    }
}

/// The key of a string or blob value.
pub fn hash_key(bytes: &[u8]) -> IndexKey {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, 0x5149_4e44) as IndexKey
}

/// The values `def` picks from `record` (repeats possible), none when the record is not in
/// the index's set or lacks the bin.
pub fn values_of(def: &Def, record: &Record) -> Vec<Indexed> {
    let mut out = Vec::new();
    let shape = &def.shape;
    if let Some(set) = &shape.set {
        if record.set_name != set.as_bytes() {
            return out;
        }
    }
    let root = if let Some(exp) = &def.exp {
        let meta = crate::command::filter::meta_of(record);
        let view = crate::command::filter::View {
            bins: &record.bins,
            meta: &meta,
        };
        match apogee_ops::exp::evaluate(exp, &view) {
            Ok(Some(v)) => v,
            _ => return out,
        }
    } else {
        let Some(bin) = record.bins.iter().find(|b| b.name == shape.bin.as_bytes()) else {
            return out;
        };
        // The plain cases without decoding a value.
        if def.ctx_steps.is_empty() && shape.itype == IndexType::Default {
            if let Some(v) = scalar(shape.data, bin.particle_type, &bin.value) {
                out.push(v);
            }
            return out;
        }
        if !matches!(bin.particle_type, ptype::LIST | ptype::MAP) {
            return out;
        }
        match Value::from_particle(bin.particle_type, &bin.value) {
            Ok(v) => v,
            Err(_) => return out,
        }
    };
    let mut root = root;
    let target = if def.ctx_steps.is_empty() {
        root
    } else {
        match apogee_ops::cdt::resolve_ctx(&mut root, &def.ctx_steps) {
            Some(v) => v,
            None => return out,
        }
    };
    let mut take = |v: &Value| {
        if let Some(x) = of_value(shape.data, v) {
            out.push(x);
        }
    };
    match (shape.itype, &target) {
        (IndexType::Default, v) => take(v),
        (IndexType::List, Value::List(l)) => l.items.iter().for_each(take),
        (IndexType::MapKeys, Value::Map(m)) => m.entries.iter().for_each(|(k, _)| take(k)),
        (IndexType::MapValues, Value::Map(m)) => m.entries.iter().for_each(|(_, v)| take(v)),
        _ => {}
    }
    out
}

/// A bin's value as `data` indexes it, without a decode.
fn scalar(data: DataType, particle_type: u8, bytes: &[u8]) -> Option<Indexed> {
    match (data, particle_type) {
        (DataType::Numeric, ptype::INTEGER) => {
            Some(Indexed::Int(i64::from_be_bytes(bytes.try_into().ok()?)))
        }
        (DataType::String, ptype::STRING) | (DataType::Blob, ptype::BLOB) => {
            Some(Indexed::Bytes(bytes.to_vec()))
        }
        (DataType::Geo, ptype::GEOJSON) => geo_of(bytes),
        _ => None,
    }
}

/// A decoded value as `data` indexes it.
fn of_value(data: DataType, v: &Value) -> Option<Indexed> {
    match (data, v) {
        (DataType::Numeric, Value::Int(i)) => Some(Indexed::Int(*i)),
        (DataType::String, Value::Str(s)) => Some(Indexed::Bytes(s.clone())),
        (DataType::Blob, Value::Bytes(ptype::BLOB, b)) => Some(Indexed::Bytes(b.clone())),
        (DataType::Geo, Value::Bytes(ptype::GEOJSON, b)) => geo_of(b),
        _ => None,
    }
}

/// A GeoJSON value (particle header or bare JSON: `geo::parse` reads both).
fn geo_of(bytes: &[u8]) -> Option<Indexed> {
    Some(Indexed::Geo(geo::parse(bytes).ok()?))
}

/// Decides each new version's entries from a namespace's definitions (one per shard,
/// replaced whenever the definitions change).
pub struct NsIndexer {
    pub defs: Vec<Arc<Def>>,
    /// The namespace's `geo2dsphere-within` as it is now (the cells geo values are kept
    /// under).
    pub cover: Arc<super::cells::GeoLive>,
}

impl Indexer for NsIndexer {
    fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    fn keys(&self, record: &Record, out: &mut Vec<(IndexId, IndexKey)>) {
        let mut keys = Vec::new();
        let mut cover = None;
        for def in &self.defs {
            for v in values_of(def, record) {
                keys.clear();
                let cover = cover.get_or_insert_with(|| self.cover.load());
                v.keys(cover, &mut keys);
                out.extend(keys.iter().map(|k| (def.id, *k)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sindex::def::{Encoded, Shape};
    use apogee_engine::{Bin, RecordMeta};
    use apogee_wire::Digest;

    fn def(itype: IndexType, data: DataType, ctx: Option<&[u8]>) -> Def {
        let shape = Shape {
            set: Some("s".into()),
            bin: "b".into(),
            data,
            itype,
            ctx: ctx.map(|c| Encoded {
                b64: String::new(),
                bytes: c.to_vec(),
            }),
            exp: None,
        };
        Def::new(1, "i".into(), shape).unwrap()
    }

    fn record(set: &str, particle_type: u8, value: Vec<u8>) -> Record {
        Record {
            digest: Digest([1; 20]),
            meta: RecordMeta::default(),
            set_name: set.as_bytes().to_vec(),
            user_key: None,
            bins: vec![Bin {
                name: b"b".to_vec(),
                particle_type,
                value,
            }],
            tombstone: false,
        }
    }

    #[test]
    fn plain_bins_give_their_value_of_the_right_type_only() {
        let num = def(IndexType::Default, DataType::Numeric, None);
        let r = record("s", ptype::INTEGER, 7i64.to_be_bytes().to_vec());
        assert_eq!(values_of(&num, &r), vec![Indexed::Int(7)]);
        assert!(
            values_of(
                &num,
                &record("t", ptype::INTEGER, 7i64.to_be_bytes().to_vec())
            )
            .is_empty(),
            "other set"
        );
        assert!(values_of(&num, &record("s", ptype::STRING, b"7".to_vec())).is_empty());
        let s = def(IndexType::Default, DataType::String, None);
        let v = values_of(&s, &record("s", ptype::STRING, b"ab".to_vec()));
        let mut keys = Vec::new();
        v[0].keys(&GeoCover::default(), &mut keys);
        assert_eq!(keys, [hash_key(b"ab")]);
    }

    #[test]
    fn collections_give_items_keys_or_values_down_a_context() {
        let list = Value::List(apogee_ops::List {
            ordered: false,
            items: vec![Value::Int(3), Value::Str(b"x".to_vec()), Value::Int(3)],
        });
        let (t, bytes) = list.to_particle();
        let r = record("s", t, bytes);
        let l = def(IndexType::List, DataType::Numeric, None);
        assert_eq!(values_of(&l, &r), vec![Indexed::Int(3), Indexed::Int(3)]);
        // ctx list_index(0) on [[5, 6], 1]: the list [5, 6].
        let nested = Value::List(apogee_ops::List {
            ordered: false,
            items: vec![
                Value::List(apogee_ops::List {
                    ordered: false,
                    items: vec![Value::Int(5), Value::Int(6)],
                }),
                Value::Int(1),
            ],
        });
        let (t, bytes) = nested.to_particle();
        let r = record("s", t, bytes);
        let ctx = def(
            IndexType::List,
            DataType::Numeric,
            Some(&[0x92, 0x10, 0x00]),
        );
        assert_eq!(values_of(&ctx, &r), vec![Indexed::Int(5), Indexed::Int(6)]);
        let map = Value::Map(apogee_ops::Map::from_entries(
            0,
            vec![(Value::Str(b"k".to_vec()), Value::Int(9))],
        ));
        let (t, bytes) = map.to_particle();
        let r = record("s", t, bytes);
        let keys = def(IndexType::MapKeys, DataType::String, None);
        assert_eq!(values_of(&keys, &r), vec![Indexed::Bytes(b"k".to_vec())]);
        let vals = def(IndexType::MapValues, DataType::Numeric, None);
        assert_eq!(values_of(&vals, &r), vec![Indexed::Int(9)]);
    }
}
