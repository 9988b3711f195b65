//! The truncate info commands (`truncate`, `truncate-namespace`, `truncate-undo`,
//! `truncate-namespace-undo`): parse and check them as Aerospike 8 does, make the new cut-off
//! durable in the namespace's truncate file, then hand it to every shard of the namespace.
//!
//! Owns each namespace's durable cut-offs (`Node::truncated`, one mutex per namespace, taken
//! only by these commands and at start). It must never answer `ok` before the file is synced:
//! a cut-off that is answered but lost would let a restart bring truncated records back.
//!
//! Known limit: the file is written and synced on the answering core's thread (one small
//! file, two fsyncs), which stalls that core for those few milliseconds; truncate is a rare
//! administrative command.

use apogee_engine::clock::{self, CITRUSLEAF_EPOCH_UNIX_SECS};
use apogee_engine::shard::truncate::{apply, Truncated, SET_NAME_BYTES_MAX};
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
    let mut durable = node.namespaces[i].truncated();
    let mut next = durable.clone();
    let slot = match set {
        Some(name) => next.sets.entry(name.to_vec()).or_default(),
        None => &mut next.namespace_ms,
    };
    // A cut-off only moves forward (Aerospike ignores an earlier one); undo clears it.
    *slot = if ms == 0 { 0 } else { (*slot).max(ms) };
    let ms = *slot;
    next.sets.retain(|_, &mut v| v > 0);
    let path = Truncated::path(&node.config.data_dir, &node.config.namespaces[i].name);
    next.save(&path).map_err(|e| {
        tracing::error!(error = %e, "truncate not applied");
        format!("ERROR:1:{e}")
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
        command = cmd.name,
        "truncate"
    );
    wait_for_clock(ms);
    Ok("ok".into())
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
