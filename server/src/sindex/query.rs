//! Secondary-index queries (spec §8 with fields 21–24 and 26): picks the index a query's
//! filter names, and runs a shard's part of it — walking the index's entries in (key,
//! digest) order over the partitions the request lists, reading each candidate record, and
//! re-checking it against the filter before it is sent, so that a hash collision, a record
//! changed since its entry was read, or a collection holding several matching values never
//! gives a wrong or repeated record.
//!
//! Each record message carries its entry's key as field 15 (bval), and a resumed query
//! continues strictly after the (bval, digest) it names in each partition, so paging is
//! exact. Memory is bounded as a scan's: one walk of entries, one chunk of records, one frame.
//! It must never walk an index on a core that does not own the partitions it answers for.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use apogee_engine::sindex::{IndexId, IndexKey};
use apogee_ops::geo;
use apogee_wire::msg::{Field, Message};
use apogee_wire::{Digest, FieldType, ResultCode};
use futures_util::stream::{self, StreamExt};

use super::cells::{self, GeoCover};
use super::def::{DataType, DefRef, IndexType};
use super::keys::{hash_key, values_of, Indexed};
use crate::core::Core;
use crate::scan::ShardScan;
use crate::stream::FrameBuilder;

/// Query fields this module reads (spec §3.2).
mod field {
    use apogee_wire::FieldType;
    pub const DIGEST_ARRAY: FieldType = FieldType(12);
    pub const BVAL_ARRAY: FieldType = FieldType(15);
    pub const INDEX_NAME: FieldType = FieldType(21);
    pub const INDEX_RANGE: FieldType = FieldType(22);
    pub const INDEX_CONTEXT: FieldType = FieldType(23);
    pub const INDEX_EXPRESSION: FieldType = FieldType(24);
    pub const INDEX_TYPE: FieldType = FieldType(26);
}

/// Records one walk of the index reads at most (a scan chunk's size).
const QUERY_CHUNK_RECORDS_MAX: usize = 256;
/// Reads a chunk keeps in flight (as a scan's).
const QUERY_READS_IN_FLIGHT_MAX: usize = 32;

/// What a query's filter asks of an indexed value.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// An integer in `[lo, hi]`.
    Range(i64, i64),
    /// Exactly these string or blob bytes.
    Equals(Vec<u8>),
    /// A point within this region (a query on points).
    Within(geo::Shape),
    /// A region containing this point (a query on regions).
    Contains(geo::Shape),
}

impl Predicate {
    /// Whether an indexed value satisfies the filter.
    fn matches(&self, v: &Indexed) -> bool {
        match (self, v) {
            (Predicate::Range(lo, hi), Indexed::Int(i)) => lo <= i && i <= hi,
            (Predicate::Equals(want), Indexed::Bytes(b)) => want == b,
            (Predicate::Within(region), Indexed::Geo(p @ geo::Shape::Point(..))) => {
                geo::matches(p, region)
            }
            (Predicate::Contains(point), Indexed::Geo(region)) => geo::matches(point, region),
            _ => false,
        }
    }

    /// The key ranges (inclusive, sorted, disjoint) entries that may match lie within: a
    /// geo query's are S2 cells (`cover`: the namespace's `geo2dsphere-within`).
    fn key_ranges(&self, cover: &GeoCover) -> Vec<(IndexKey, IndexKey)> {
        match self {
            Predicate::Range(lo, hi) => vec![(*lo, *hi)],
            Predicate::Equals(b) => vec![(hash_key(b), hash_key(b))],
            Predicate::Within(region) => cover.within_ranges(region),
            Predicate::Contains(point) => cells::containing_ranges(point),
        }
    }
}

/// A parsed index filter: the index and what it asks, with the resume point of each
/// partition the client resumes.
#[derive(Debug, Clone)]
pub struct IndexQuery {
    pub def: DefRef,
    pub predicate: Predicate,
    /// Where the entries that may match lie ([`Predicate::key_ranges`]).
    pub ranges: Vec<(IndexKey, IndexKey)>,
    /// Per resumed partition: continue strictly after this (bval, digest).
    pub resume: HashMap<u16, (IndexKey, Digest)>,
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Reads field 22 (spec §3.3): the bin, the particle type and the begin and end values.
fn parse_range(data: &[u8]) -> Result<(String, u8, Vec<u8>, Vec<u8>), ResultCode> {
    let bad = ResultCode::Parameter;
    let [count, name_len, rest @ ..] = data else {
        return Err(bad);
    };
    if *count != 1 {
        return Err(bad);
    }
    let name_len = usize::from(*name_len);
    let name = rest.get(..name_len).ok_or(bad)?;
    let rest = &rest[name_len..];
    let (&ptype, rest) = rest.split_first().ok_or(bad)?;
    let begin_len = be_u32(rest).ok_or(bad)? as usize;
    let rest = &rest[4..];
    let begin = rest.get(..begin_len).ok_or(bad)?;
    let rest = &rest[begin_len..];
    let end_len = be_u32(rest).ok_or(bad)? as usize;
    let rest = &rest[4..];
    let end = rest.get(..end_len).ok_or(bad)?;
    if rest.len() != end_len {
        return Err(bad);
    }
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad)?;
    Ok((name, ptype, begin.to_vec(), end.to_vec()))
}

/// Parses a query's index fields against namespace `ns`'s catalog: 201 when no index
/// matches the filter, 203 while the index is still being built, 4 for a malformed filter.
fn parse(
    core: &Core,
    ns: usize,
    set: Option<&[u8]>,
    msg: &Message,
) -> Result<IndexQuery, ResultCode> {
    let range = msg.field(field::INDEX_RANGE).ok_or(ResultCode::Parameter)?;
    let (bin, ptype, begin, end) = parse_range(range)?;
    let itype = match msg.field(field::INDEX_TYPE) {
        None => IndexType::Default,
        Some([b]) => IndexType::from_wire(*b).ok_or(ResultCode::Parameter)?,
        Some(_) => return Err(ResultCode::Parameter),
    };
    let ctx = msg.field(field::INDEX_CONTEXT);
    let exp = msg.field(field::INDEX_EXPRESSION);
    let name = msg.field(field::INDEX_NAME);
    let data = match ptype {
        1 => DataType::Numeric,
        3 => DataType::String,
        4 => DataType::Blob,
        23 => DataType::Geo,
        _ => return Err(ResultCode::Parameter),
    };
    let set = set.map(|s| String::from_utf8_lossy(s).into_owned());
    let defs = core.node.namespaces[ns].sindexes.defs();
    let fits = |d: &&DefRef| {
        let s = &d.shape;
        if let Some(n) = name {
            // An index named by the query (field 21) is that index, whatever bin, context
            // or expression the filter leaves out; its value type must still fit.
            return n == d.name.as_bytes() && s.data == data && s.itype == itype;
        }
        (exp.is_some() || s.bin == bin)
            && s.data == data
            && s.itype == itype
            && s.ctx.as_ref().map(|c| c.bytes.as_slice()) == ctx
            && s.exp.as_ref().map(|e| e.bytes.as_slice()) == exp
            && (s.set.is_none() || s.set == set)
    };
    // An index on the query's set is preferred to one on the whole namespace.
    let def = defs
        .iter()
        .filter(fits)
        .max_by_key(|d| d.shape.set.is_some())
        .cloned()
        .ok_or(ResultCode::IndexNotFound)?;
    if !def.readable(core.node.config.cores) {
        return Err(ResultCode::IndexNotReadable);
    }
    let predicate = match data {
        DataType::Numeric => {
            let int = |b: &[u8]| -> Result<i64, ResultCode> {
                Ok(i64::from_be_bytes(
                    b.try_into().map_err(|_| ResultCode::Parameter)?,
                ))
            };
            let (lo, hi) = (int(&begin)?, int(&end)?);
            if lo > hi {
                return Err(ResultCode::Parameter);
            }
            Predicate::Range(lo, hi)
        }
        DataType::String | DataType::Blob => {
            if begin != end {
                return Err(ResultCode::Parameter);
            }
            Predicate::Equals(begin)
        }
        DataType::Geo => {
            let shape = geo::parse(&begin).map_err(|_| ResultCode::Parameter)?;
            geo::check_rings(&shape).map_err(|_| ResultCode::Parameter)?;
            match shape {
                geo::Shape::Point(..) => Predicate::Contains(shape),
                _ => Predicate::Within(shape),
            }
        }
    };
    let cover = core.node.namespaces[ns].live.geo.load();
    Ok(IndexQuery {
        def,
        ranges: predicate.key_ranges(&cover),
        predicate,
        resume: resume_points(msg)?,
    })
}

/// The query a scan request carries, if it has an index filter (field 22); the other index
/// fields without one are result 4.
pub fn parse_if_any(
    core: &Core,
    ns: usize,
    set: Option<&[u8]>,
    msg: &Message,
) -> Result<Option<IndexQuery>, ResultCode> {
    if msg.field(field::INDEX_RANGE).is_some() {
        return parse(core, ns, set, msg).map(Some);
    }
    let qualifiers = [
        field::INDEX_NAME,
        field::INDEX_CONTEXT,
        field::INDEX_EXPRESSION,
        field::INDEX_TYPE,
    ];
    if qualifiers.iter().any(|f| msg.field(*f).is_some()) {
        // Index details without the filter they qualify.
        return Err(ResultCode::Parameter);
    }
    Ok(None)
}

/// Field 12's digests paired with field 15's bvals (u64 LE each, one per digest).
fn resume_points(msg: &Message) -> Result<HashMap<u16, (IndexKey, Digest)>, ResultCode> {
    let mut out = HashMap::new();
    let (Some(digests), Some(bvals)) =
        (msg.field(field::DIGEST_ARRAY), msg.field(field::BVAL_ARRAY))
    else {
        return Ok(out);
    };
    if !bvals.len().is_multiple_of(8) || bvals.len() / 8 != digests.len() / 20 {
        return Err(ResultCode::Parameter);
    }
    for (d, b) in digests.chunks_exact(20).zip(bvals.chunks_exact(8)) {
        let d = Digest::from_slice(d).ok_or(ResultCode::Parameter)?;
        let b = i64::from_le_bytes(b.try_into().expect("8 bytes"));
        out.insert(d.partition().0, (b, d));
    }
    Ok(out)
}

/// Whether a record read for entry (`key`, its digest) is sent: some value of it matches
/// the filter, and `key` is the first of the record's entries the query walks — so a record
/// with several matching values, or a region under several cells, is sent once.
///
/// The record's entries are not listed anywhere: its keys are computed again (`cover`: the
/// geo settings now) and the first one in the query's ranges that the index holds (`held`)
/// is where it is sent. A region indexed under other `geo2dsphere-within` settings may hold
/// none of its keys under today's; it is sent at the first of its entries this run walks
/// (`seen`), so once per query call (a paginated query could send it again after a resume).
fn sent_at(
    q: &IndexQuery,
    record: &apogee_engine::Record,
    key: IndexKey,
    cover: &cells::GeoCover,
    held: impl Fn(IndexKey) -> bool,
    seen: &mut std::collections::HashSet<Digest>,
) -> bool {
    let values = values_of(&q.def, record);
    if !values.iter().any(|v| q.predicate.matches(v)) {
        return false;
    }
    let mut keys = Vec::new();
    for v in &values {
        v.keys(cover, &mut keys);
    }
    keys.retain(|k| cells::in_ranges(&q.ranges, *k));
    keys.sort_unstable();
    keys.dedup();
    // Ranges are sorted and disjoint, so the walk meets keys in ascending order.
    match keys.into_iter().find(|k| held(*k)) {
        Some(first) => first == key,
        None => seen.insert(record.digest),
    }
}

/// Runs one shard's part of an index query: walks the entries in (key, digest) order,
/// keeping those of the listed partitions past their resume points, and sends each record
/// that passes the filter, the set and the filter expression.
pub async fn run_shard(core: Rc<Core>, work: ShardScan, q: Arc<IndexQuery>) {
    let ShardScan {
        spec,
        partitions,
        job,
        frames,
        done,
        ..
    } = work;
    let store = core.stores[spec.namespace].clone();
    let namespace = core.node.config.namespaces[spec.namespace].name.clone();
    let mut wanted = vec![false; usize::from(apogee_wire::digest::PARTITION_COUNT)];
    let mut resume: HashMap<u16, (IndexKey, Digest)> = HashMap::new();
    for (pid, digest) in &partitions {
        debug_assert_eq!(core.node.shard_of(*pid), core.shard);
        wanted[usize::from(*pid)] = true;
        if let (Some(d), Some(r)) = (digest, q.resume.get(pid)) {
            if r.1 == *d {
                resume.insert(*pid, *r);
            }
        }
    }
    let id: IndexId = q.def.id;
    // Ranges are walked in order; none (a region with no cells) walks nothing.
    let mut ranges = q.ranges.iter();
    let (first, mut last) = ranges
        .next()
        .copied()
        .unwrap_or((IndexKey::MAX, IndexKey::MIN));
    let mut after = first.checked_sub(1).map(|k| (k, Digest([0xff; 20])));
    let mut frame = FrameBuilder::new();
    let mut finished = true;
    let cover = core.node.namespaces[spec.namespace].live.geo.load();
    let mut seen = std::collections::HashSet::new();
    let Ok(mut agg) =
        crate::udf::stream::start_in(spec.aggregate.as_ref(), &core.node.udfs, &mut frame, &job)
    else {
        if let (Some(frames), Some((last, _))) = (&frames, frame.into_frame()) {
            let _ = frames.send_async(last).await;
        }
        return;
    };
    'walk: loop {
        if job.is_aborted() {
            finished = false;
            break;
        }
        let walk = store.walk_sindex(id, after, last, QUERY_CHUNK_RECORDS_MAX, |key, d| {
            let p = d.partition().0;
            wanted[usize::from(p)] && resume.get(&p).is_none_or(|r| (key, *d) > *r)
        });
        let mut reads = stream::iter(&walk.found)
            .map(|(key, digest)| {
                let store = store.clone();
                async move { (*key, store.get_uncached(digest).await) }
            })
            .buffered(QUERY_READS_IN_FLIGHT_MAX);
        while let Some((key, read)) = reads.next().await {
            let record = match read {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "query read failed; the query ends with a server error");
                    job.fail();
                    finished = false;
                    break 'walk;
                }
            };
            if spec.set.as_ref().is_some_and(|s| record.set_name != *s)
                || !sent_at(
                    &q,
                    &record,
                    key,
                    &cover,
                    |k| store.sindex_holds(id, k, &record.digest),
                    &mut seen,
                )
            {
                continue;
            }
            if let Some(f) = &spec.filter {
                if !crate::scan::shard::matches_filter(f, &record) {
                    job.count_filtered();
                    continue;
                }
            }
            if let Some(write) = &spec.write {
                crate::scan::shard::apply_write(&core, &spec, write, &record, &job).await;
                continue;
            }
            let msg = if let Some(a) = &mut agg {
                match a.feed(record) {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(failure) => {
                        frame.push(&failure);
                        job.fail();
                        agg = None;
                        finished = false;
                        break 'walk;
                    }
                }
            } else {
                let Some(mut msg) = crate::scan::shard::record_message(&spec, &namespace, record)
                else {
                    continue;
                };
                msg.fields.push(Field {
                    field_type: FieldType(15),
                    data: key.to_le_bytes().to_vec(),
                });
                msg
            };
            if !job.take_record() {
                finished = false;
                break 'walk;
            }
            frame.push(&msg);
            if let Some((full, _)) = frame.take_if_full() {
                let Some(frames) = &frames else { continue };
                if frames.send_async(full).await.is_err() {
                    job.abort("client-disconnected");
                    finished = false;
                    break 'walk;
                }
            }
        }
        drop(reads);
        match (walk.next, ranges.next()) {
            (Some(n), _) => after = Some(n),
            // This range is walked: the next one (a geo query's cells).
            (None, Some(&(first, end))) => {
                after = first.checked_sub(1).map(|k| (k, Digest([0xff; 20])));
                last = end;
            }
            (None, None) => break,
        }
        futures_lite::future::yield_now().await;
    }
    if finished {
        for _ in &partitions {
            job.partition_done();
        }
    }
    crate::udf::stream::finish_into(agg, &mut frame, &job);
    if let (Some(frames), Some((last, _))) = (&frames, frame.into_frame()) {
        let _ = frames.send_async(last).await;
    }
    drop(done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_range_is_read_and_checked() {
        let mut f = vec![1, 1, b'a', 1];
        f.extend(8u32.to_be_bytes());
        f.extend(8i64.to_be_bytes());
        f.extend(8u32.to_be_bytes());
        f.extend(9i64.to_be_bytes());
        let (bin, t, b, e) = parse_range(&f).unwrap();
        assert_eq!((bin.as_str(), t), ("a", 1));
        assert_eq!(
            (b, e),
            (8i64.to_be_bytes().to_vec(), 9i64.to_be_bytes().to_vec())
        );
        assert_eq!(parse_range(&f[..f.len() - 1]), Err(ResultCode::Parameter));
        let mut two = f.clone();
        two[0] = 2;
        assert_eq!(parse_range(&two), Err(ResultCode::Parameter));
        let mut long = f.clone();
        long.push(0);
        assert_eq!(parse_range(&long), Err(ResultCode::Parameter));
    }

    #[test]
    fn predicates_match_their_kind_of_value_only() {
        assert!(Predicate::Range(1, 3).matches(&Indexed::Int(3)));
        assert!(!Predicate::Range(1, 3).matches(&Indexed::Int(4)));
        assert!(!Predicate::Range(1, 3).matches(&Indexed::Bytes(vec![2])));
        assert!(Predicate::Equals(b"x".to_vec()).matches(&Indexed::Bytes(b"x".to_vec())));
        let circle =
            geo::parse(br#"{"type":"AeroCircle","coordinates":[[0.0,0.0],1000]}"#).unwrap();
        let near = geo::parse(br#"{"type":"Point","coordinates":[0.001,0.001]}"#).unwrap();
        assert!(Predicate::Within(circle.clone()).matches(&Indexed::Geo(near.clone())));
        assert!(Predicate::Contains(near).matches(&Indexed::Geo(circle)));
    }
}
