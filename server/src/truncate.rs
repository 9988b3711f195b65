//! The truncate info commands (`truncate`, `truncate-namespace`, `truncate-undo`,
//! `truncate-namespace-undo`): parse and check them as Aerospike 8 does, make the new cut-off
//! durable in the namespace's truncate file, then hand it to every shard of the namespace.
//!
//! Owns each namespace's durable cut-offs (`Node::truncated`, one mutex per namespace, taken
//! only by these commands and at start). It must never answer `ok` before the file is synced:
//! a cut-off that is answered but lost would let a restart bring truncated records back.
//!
//! In a cluster the node that takes the command also sends the cut-off to every other member
//! over the fabric (`cluster::metadata::forward`, on core 0, retried), where it is made durable the same
//! way, so a client that sends `truncate` to one node truncates the namespace everywhere.
//!
//! On every committed view each member sends all its cut-offs, undone ones included, to the
//! view's members again (`share_on_view`): a member that was down or cut off when a truncate
//! was forwarded learns it when it returns, and a new node learns every cut-off, as
//! Aerospike's system metadata reaches every node of a new cluster. Every change of a
//! cut-off carries a version (one above the version its node knew, then its node id), and
//! members merge what they receive by [`merge`]: two truncates keep the later cut-off (a
//! cut-off only moves forward), and between a truncate and an undo the higher version wins —
//! so an undo taken while a member was away is not undone when that member returns with its
//! older truncate. Every member ends with the same cut-offs whatever order the changes
//! arrive in, which is what Aerospike's principal-driven system metadata guarantees; here
//! without a principal (each member shares all it has on every view).
//!
//! Known limits: the file is written and synced on the answering core's thread (one small
//! file, two fsyncs), which stalls that core for those few milliseconds; truncate is a rare
//! administrative command. The answer does not wait for the other members; and a returning
//! member's records older than a cut-off it has not yet received can be served or migrated in
//! the moment between its view's commit and the cut-off's arrival.

use apogee_engine::clock::{self, CITRUSLEAF_EPOCH_UNIX_SECS};
use apogee_engine::shard::truncate::{apply, Truncated, Version, SET_NAME_BYTES_MAX};
use apogee_wire::info::InfoCommand;
use std::time::{Duration, Instant};

use crate::node::Node;

/// Which command, and so which arguments it takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Set,
    Namespace,
    UndoSet,
    UndoNamespace,
}

/// Answers one truncate command; `None` when `cmd` is not one.
pub fn answer(node: &Node, cmd: &InfoCommand<'_>) -> Option<String> {
    let kind = match cmd.name {
        "truncate" => Kind::Set,
        "truncate-namespace" => Kind::Namespace,
        "truncate-undo" => Kind::UndoSet,
        "truncate-namespace-undo" => Kind::UndoNamespace,
        _ => return None,
    };
    Some(run(node, cmd, kind).unwrap_or_else(|e| e))
}

fn run(node: &Node, cmd: &InfoCommand<'_>, kind: Kind) -> Result<String, String> {
    let ns = match cmd.param("namespace") {
        None => return Err("ERROR:20:missing 'namespace'".into()),
        Some("") => return Err("ERROR:20:missing 'namespace' value".into()),
        Some(ns) => ns,
    };
    let wants_set = matches!(kind, Kind::Set | Kind::UndoSet);
    let set = match (cmd.param("set"), wants_set) {
        (None, true) => return Err("ERROR:4:missing 'set'".into()),
        (Some(""), true) => return Err("ERROR:4:missing 'set' value".into()),
        (Some(s), true) if s.len() > SET_NAME_BYTES_MAX => {
            return Err("ERROR:4:'set' value too long".into())
        }
        (Some(s), true) => Some(s.as_bytes()),
        (Some(_), false) => return Err("ERROR:4:unexpected set name".into()),
        (None, false) => None,
    };
    let ms = match kind {
        Kind::Set | Kind::Namespace => cut_off_ms(cmd.param("lut"))?,
        Kind::UndoSet | Kind::UndoNamespace => 0,
    };
    // As Aerospike: a namespace this node does not have is accepted and changes nothing.
    let Some(i) = node.config.namespace_index(ns.as_bytes()) else {
        tracing::warn!(
            namespace = ns,
            command = cmd.name,
            "truncate of an unknown namespace: ignored"
        );
        return Ok("ok".into());
    };
    let (kept_ms, version) =
        commit(node, i, set, Change::Here(ms), cmd.name).map_err(|e| format!("ERROR:1:{e}"))?;
    crate::cluster::metadata::send_now(
        node,
        crate::cluster::metadata::Metadata::Truncate,
        encode_cut_off(ns, set, kept_ms, version),
    );
    wait_for_clock(kept_ms);
    Ok("ok".into())
}

/// A change of one cut-off: taken here (a command), or a member's as it sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Cut-off ms (0: undo), versioned one above what this node knew.
    Here(u64),
    /// A member's cut-off (0: undone) and its version.
    From(u64, Version),
}

/// What two members' versions of one cut-off (ms, 0 for none or undone; version) merge to:
/// the change with the higher version, whichever is `a` and in whatever order a member hears
/// of them (versions are totally ordered, so every member ends with the same). A truncate
/// taken on a node keeps the later of its cut-off and the one that node knew, so a cut-off
/// moves back only where two members truncated the same set without hearing of each other
/// (the two sides of a split) and the lower one was taken at the higher version.
fn merge(a: (u64, Version), b: (u64, Version)) -> (u64, Version) {
    if b.1 > a.1 {
        b
    } else {
        a
    }
}

/// Makes a change of the cut-off of namespace `i`, or of its set `set`, durable and hands it
/// to every shard; returns the cut-off now kept and its version. `Err` when the truncate file
/// could not be written (nothing changed).
fn commit(
    node: &Node,
    i: usize,
    set: Option<&[u8]>,
    change: Change,
    command: &str,
) -> Result<(u64, Version), apogee_engine::shard::truncate::TruncateFileError> {
    let ns = node.config.namespaces[i].name.as_str();
    let mut durable = node.namespaces[i].truncated();
    let mut next = durable.clone();
    let target = set.map(<[u8]>::to_vec);
    let known = version_of(&durable, set);
    let slot = match set {
        Some(name) => next.sets.entry(name.to_vec()).or_default(),
        None => &mut next.namespace_ms,
    };
    let (ms, version) = match change {
        Change::Here(ms) => {
            let mine = Version {
                counter: known.counter + 1,
                origin: node.id.0,
            };
            // A truncate keeps the later of the two cut-offs; an undo clears it.
            (if ms == 0 { 0 } else { (*slot).max(ms) }, mine)
        }
        Change::From(ms, theirs) => merge((*slot, known), (ms, theirs)),
    };
    if matches!(change, Change::From(..)) && (ms, version) == (*slot, known) {
        return Ok((ms, version)); // nothing new here: no file write
    }
    *slot = ms;
    next.versions.insert(target, version);
    next.sets.retain(|_, &mut v| v > 0);
    let path = Truncated::path(&node.config.data_dir, &node.config.namespaces[i].name);
    next.save(&path).inspect_err(|e| {
        tracing::error!(error = %e, "truncate not applied");
    })?;
    *durable = next;
    for shard in node.namespaces[i].shards().iter() {
        let (p, s) = (&shard.truncate_points, &shard.set_stats);
        if !apply(p, s, set, ms) {
            tracing::warn!(
                namespace = ns,
                "set limit reached: the truncate of this set applies after a restart only"
            );
        }
    }
    tracing::info!(
        namespace = ns,
        set = set.map(String::from_utf8_lossy).as_deref(),
        cut_off_ms = ms,
        version = version.counter,
        origin = %format!("{:X}", version.origin),
        command,
        "truncate"
    );
    Ok((ms, version))
}

fn version_of(t: &Truncated, set: Option<&[u8]>) -> Version {
    (t.versions.get(&set.map(<[u8]>::to_vec)).copied()).unwrap_or_default()
}

/// Cut-offs waiting to be sent to the other members (truncates are rare; past this many a
/// truncate is applied here only, with an error logged).
pub const CUT_OFFS_PENDING_MAX: usize = 64;

/// A cut-off as the fabric carries it: `ns_len u8 | ns | set_len u8 | set | cut_off_ms u64 |
/// version u64 | origin u64`, little-endian (set length 0: the whole namespace; cut-off 0:
/// undone).
pub fn encode_cut_off(ns: &str, set: Option<&[u8]>, ms: u64, version: Version) -> Vec<u8> {
    let set = set.unwrap_or_default();
    let ns_len = u8::try_from(ns.len()).expect("namespace names are at most 31 bytes");
    let set_len = u8::try_from(set.len()).expect("set names are at most 63 bytes");
    let mut out = Vec::with_capacity(2 + ns.len() + set.len() + 24);
    out.push(ns_len);
    out.extend_from_slice(ns.as_bytes());
    out.push(set_len);
    out.extend_from_slice(set);
    out.extend_from_slice(&ms.to_le_bytes());
    out.extend_from_slice(&version.counter.to_le_bytes());
    out.extend_from_slice(&version.origin.to_le_bytes());
    out
}

/// A decoded cut-off: namespace, set, cut-off ms, version.
type CutOff<'a> = (&'a str, Option<&'a [u8]>, u64, Version);

/// [`encode_cut_off`]'s fields back, every length checked.
fn decode_cut_off(body: &[u8]) -> Result<CutOff<'_>, &'static str> {
    let (&ns_len, rest) = body.split_first().ok_or("empty")?;
    let ns = rest
        .get(..usize::from(ns_len))
        .ok_or("namespace cut short")?;
    let ns = std::str::from_utf8(ns).map_err(|_| "namespace is not UTF-8")?;
    let rest = &rest[usize::from(ns_len)..];
    let (&set_len, rest) = rest.split_first().ok_or("no set length")?;
    if usize::from(set_len) > SET_NAME_BYTES_MAX {
        return Err("set name too long");
    }
    let set = rest.get(..usize::from(set_len)).ok_or("set cut short")?;
    let tail: [u8; 24] = rest[usize::from(set_len)..]
        .try_into()
        .map_err(|_| "cut-off and version are not 24 bytes")?;
    let word = |i: usize| u64::from_le_bytes(tail[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let set = (set_len > 0).then_some(set);
    let version = Version {
        counter: word(1),
        origin: word(2),
    };
    Ok((ns, set, word(0), version))
}

/// Applies a cut-off another member forwarded: the answer byte (0 durable here, 1 not), or a
/// malformed body (the connection is closed). A namespace this node does not have is
/// ignored, as for the info command.
pub fn apply_forwarded(
    node: &Node,
    body: &[u8],
) -> Result<u8, crate::cluster::fabric::FabricError> {
    let (ns, set, ms, version) =
        decode_cut_off(body).map_err(crate::cluster::fabric::FabricError::CutOff)?;
    let Some(i) = node.config.namespace_index(ns.as_bytes()) else {
        return Ok(0);
    };
    let change = Change::From(ms, version);
    Ok(
        match commit(node, i, set, change, "truncate from a member") {
            Ok(_) => 0,
            Err(_) => 1,
        },
    )
}

/// Core 0 of a clustered node, on a committed view: queues every cut-off this node keeps for
/// `cluster::metadata::forward` to send to the view's members (waiting while the queue is full).
pub fn share_on_view(node: &std::sync::Arc<Node>) {
    let mut bodies = Vec::new();
    for (i, ns) in node.config.namespaces.iter().enumerate() {
        let kept = node.namespaces[i].truncated().clone();
        // Every cut-off kept or ever changed here, undone ones (0) included (an undo must
        // reach a member that still has the truncate); one of a file written before
        // versions has version (0, 0).
        let targets: std::collections::BTreeSet<Option<&[u8]>> = (kept.versions.keys())
            .map(Option::as_deref)
            .chain((kept.namespace_ms > 0).then_some(None))
            .chain(kept.sets.keys().map(|s| Some(s.as_slice())))
            .collect();
        for set in targets {
            let ms = match set {
                None => kept.namespace_ms,
                Some(name) => kept.sets.get(name).copied().unwrap_or(0),
            };
            bodies.push(encode_cut_off(&ns.name, set, ms, version_of(&kept, set)));
        }
    }
    crate::cluster::metadata::send_on_view(
        node,
        crate::cluster::metadata::Metadata::Truncate,
        bodies,
    );
}

/// Longest a truncate waits for the clock to reach its cut-off: normally under 1 ms; the
/// bound only matters if the clock is stepped back meanwhile.
const CUT_OFF_WAIT_MS_MAX: u64 = 5;

/// Blocks (this core, under a millisecond) until the clock reaches `cut_off_ms`, so a write
/// acknowledged after the truncate's answer is never older than its cut-off.
fn wait_for_clock(cut_off_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(CUT_OFF_WAIT_MS_MAX);
    while clock::now_ms() < cut_off_ms && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The cut-off in ms since 2010-01-01: the next millisecond when `lut` is absent, else `lut` nanoseconds since
/// the Unix epoch, parsed as C's `strtoul(lut, NULL, 0)` does (Aerospike's parser: decimal,
/// `0x` hex or `0` octal, up to the first character that does not fit).
fn cut_off_ms(lut: Option<&str>) -> Result<u64, String> {
    let now = clock::now_ms();
    // Without `lut` the cut-off is the next millisecond, and `run` answers only once the clock
    // has reached it: every record written before the command (last-update time <= now) is
    // truncated, even one written in the same millisecond, and every write that starts after
    // the answer gets a last-update time at or past the cut-off, so it is kept.
    let Some(lut) = lut else { return Ok(now + 1) };
    if lut.is_empty() {
        return Err("ERROR:4:missing 'lut' value".into());
    }
    let ns = strtoul(lut);
    let ms = (ns / 1_000_000).saturating_sub(CITRUSLEAF_EPOCH_UNIX_SECS * 1000);
    if ms == 0 {
        return Err("ERROR:4:would truncate to 0".into());
    }
    if ms > now {
        return Err("ERROR:4:would truncate in the future".into());
    }
    Ok(ms)
}

/// `strtoul(s, NULL, 0)`: the longest prefix that is a number; u64::MAX when it overflows.
fn strtoul(s: &str) -> u64 {
    let s = s.trim_start();
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    let mut v: u64 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        match v
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(n) => v = n,
            None => return u64::MAX,
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_round_trips_and_every_cut_or_extra_byte_is_refused() {
        let v = Version {
            counter: 3,
            origin: 0xB2,
        };
        let body = encode_cut_off("test", Some(b"users"), 1_234_567, v);
        assert_eq!(
            decode_cut_off(&body),
            Ok(("test", Some(&b"users"[..]), 1_234_567, v))
        );
        let whole = encode_cut_off("bar", None, 0, Version::default());
        assert_eq!(
            decode_cut_off(&whole),
            Ok(("bar", None, 0, Version::default()))
        );
        for cut in 0..body.len() {
            assert!(decode_cut_off(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_cut_off(&longer).is_err());
        let mut long_set = vec![4];
        long_set.extend_from_slice(b"test");
        long_set.push(64);
        long_set.extend_from_slice(&[b's'; 64]);
        long_set.extend_from_slice(&[0; 24]);
        assert_eq!(decode_cut_off(&long_set), Err("set name too long"));
        assert_eq!(
            decode_cut_off(&[2, 0xFF, 0xFE, 0]),
            Err("namespace is not UTF-8")
        );
    }

    #[test]
    fn members_agree_on_cut_offs_whatever_order_changes_arrive_in() {
        let v = |counter, origin| Version { counter, origin };
        // The later change wins, by version.
        assert_eq!(merge((100, v(1, 0xA1)), (50, v(2, 0xB2))), (50, v(2, 0xB2)));
        // An undo taken after the truncate (a higher version) wins over the truncate a
        // member that was away brings back, and the other way round.
        let truncate = (100, v(1, 0xA1));
        let undo = (0, v(2, 0xB2));
        assert_eq!(merge(undo, truncate), undo);
        assert_eq!(merge(truncate, undo), undo);
        // A truncate after the undo wins over it.
        let again = (120, v(3, 0xA1));
        assert_eq!(merge(undo, again), again);
        assert_eq!(merge(again, undo), again);
        // Commutative, associative and idempotent over a few changes: members that hear of
        // them in any order agree.
        let changes = [truncate, undo, again, (90, v(3, 0xC3)), (0, v(4, 0xA1))];
        for &a in &changes {
            assert_eq!(merge(a, a), a);
            for &b in &changes {
                assert_eq!(merge(a, b), merge(b, a), "{a:?} {b:?}");
                for &c in &changes {
                    assert_eq!(merge(merge(a, b), c), merge(a, merge(b, c)));
                }
            }
        }
    }

    #[test]
    fn lut_parses_like_aerospike() {
        assert_eq!(strtoul("12x"), 12);
        assert_eq!(strtoul("0x10"), 16);
        assert_eq!(strtoul("abc"), 0);
        assert_eq!(strtoul("99999999999999999999"), u64::MAX);
        assert_eq!(
            cut_off_ms(Some("abc")).unwrap_err(),
            "ERROR:4:would truncate to 0"
        );
        assert_eq!(
            cut_off_ms(Some("1262304000000000000")).unwrap_err(),
            "ERROR:4:would truncate to 0"
        );
        assert_eq!(cut_off_ms(Some("1262304001000000000")), Ok(1000));
        assert_eq!(
            cut_off_ms(Some("99999999999999999999")).unwrap_err(),
            "ERROR:4:would truncate in the future"
        );
        assert_eq!(
            cut_off_ms(Some("")).unwrap_err(),
            "ERROR:4:missing 'lut' value"
        );
    }
}
