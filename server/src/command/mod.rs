//! Keyed (single-record) commands: classification, request validation, and the mapping of
//! storage errors to result codes. The read, write and delete semantics live in their own
//! modules and follow the real server (spec §6).
//!
//! Runs on the core that owns the record's partition. It must never apply part of a write:
//! every check that can fail happens before the record is appended.

pub mod delete;
pub mod filter;
pub mod read;
pub mod reply;
pub mod ttl;
pub mod write;

use apogee_engine::StoreError;
use apogee_wire::msg::{info1, info2, Message, OpType, BIN_NAME_BYTES_MAX};
use apogee_wire::{Digest, FieldType, ResultCode};

pub use reply::Reply;

/// Field types that keyed commands may carry and this server honours or may ignore.
fn field_is_supported(t: u8) -> bool {
    // ns, set, user key, digest, then scan/query fields a client may leave on a keyed command.
    matches!(
        t,
        0 | 1 | 2 | 4 | 7 | 9 | 10 | 11 | 12 | 13 | 14 | 15 | 21..=24 | 26 | 30..=32 | 40 | 43 | 44
    )
}

/// Field types defined by the protocol whose features this server does not have yet.
fn field_is_unsupported_feature(t: u8) -> bool {
    // MRT (3, 5, 6), the scan/query UDF op (33), batch (41, 42). Record UDFs (30..32) are
    // served by `udf::apply`.
    matches!(t, 3 | 5 | 6 | 33 | 41 | 42)
}

/// Op types defined by the protocol that this server does not implement yet:
/// String ops (server 8.2+).
fn op_is_unsupported_feature(t: OpType) -> bool {
    matches!(t.0, 17..=19)
}

fn op_is_supported(t: OpType) -> bool {
    matches!(t.0, 1..=5 | 7..=16)
}

/// Most bytes of bin values the value ops (list/map, bit, HLL, expression) of one command
/// may work through: each such op decodes and re-encodes its bin, so without a bound a
/// command of 65,535 ops on a 1 MiB bin would hold a core for minutes.
pub const OP_WORK_BYTES_MAX: usize = 256 << 20;

/// Counts the bytes a command's value ops work through against [`OP_WORK_BYTES_MAX`].
#[derive(Debug, Default)]
pub struct WorkBudget {
    used: usize,
}

impl WorkBudget {
    /// Charges an op that works on `bytes` of bin data; result 4 once the budget is spent.
    pub fn charge(&mut self, bytes: usize) -> Result<(), ResultCode> {
        self.used = self.used.saturating_add(bytes);
        if self.used > OP_WORK_BYTES_MAX {
            tracing::debug!(
                bytes = self.used,
                "command's value ops over their work budget"
            );
            return Err(ResultCode::Parameter);
        }
        Ok(())
    }
}

/// The value-op family of an op type, and whether it is the family's modify type.
pub fn value_op_family(t: OpType) -> Option<(apogee_ops::Family, bool)> {
    use apogee_ops::Family;
    Some(match t {
        OpType::CDT_READ => (Family::Cdt, false),
        OpType::CDT_MODIFY => (Family::Cdt, true),
        OpType::BIT_READ => (Family::Bits, false),
        OpType::BIT_MODIFY => (Family::Bits, true),
        OpType::HLL_READ => (Family::Hll, false),
        OpType::HLL_MODIFY => (Family::Hll, true),
        _ => return None,
    })
}

/// The result code of a failed list/map op.
pub fn op_error_code(e: &apogee_ops::OpError) -> ResultCode {
    tracing::debug!(error = %e, "op refused");
    match e.result_code() {
        1 => ResultCode::ServerError,
        6 => ResultCode::BinExists,
        12 => ResultCode::IncompatibleType,
        16 => ResultCode::UnsupportedFeature,
        23 => ResultCode::ElementNotFound,
        24 => ResultCode::ElementExists,
        17 => ResultCode::BinNotFound,
        26 => ResultCode::OpNotApplicable,
        _ => ResultCode::Parameter,
    }
}

/// Checks that apply to every keyed command; `Err` carries the result code.
pub fn validate(msg: &Message) -> Result<(), ResultCode> {
    for f in &msg.fields {
        let t = f.field_type.0;
        if field_is_unsupported_feature(t) {
            return Err(ResultCode::UnsupportedFeature);
        }
        if !field_is_supported(t) {
            return Err(ResultCode::Parameter);
        }
    }
    if msg
        .field(FieldType::SET)
        .is_some_and(|s| s.len() > apogee_engine::record::SET_NAME_BYTES_MAX)
    {
        return Err(ResultCode::Parameter);
    }
    if let Some(k) = msg.field(FieldType::KEY) {
        if k.is_empty() || k[0] == 0 {
            return Err(ResultCode::Parameter);
        }
    }
    for op in &msg.ops {
        if op_is_unsupported_feature(op.op_type) {
            return Err(ResultCode::UnsupportedFeature);
        }
        if !op_is_supported(op.op_type) {
            return Err(ResultCode::Parameter);
        }
        if op.name.len() > BIN_NAME_BYTES_MAX {
            return Err(ResultCode::BinName);
        }
    }
    Ok(())
}

/// The digest of a keyed command: field 4, exactly 20 bytes.
pub fn digest_of(msg: &Message) -> Result<Digest, ResultCode> {
    msg.field(FieldType::DIGEST)
        .and_then(Digest::from_slice)
        .ok_or(ResultCode::Parameter)
}

/// Maps a storage failure to the result code the client sees, logging what the client cannot.
pub fn store_error_code(e: &StoreError) -> ResultCode {
    match e {
        StoreError::RecordTooBig { .. } => ResultCode::RecordTooBig,
        StoreError::OutOfSpace { .. } => ResultCode::OutOfSpace,
        // The store answers a full filesystem with OutOfSpace itself; an ENOSPC that reaches
        // here some other way is still a full disk to the client, not a server error.
        StoreError::Io { source, .. } if apogee_engine::shard::media::no_space(source) => {
            tracing::warn!(error = %e, "storage error: filesystem full");
            ResultCode::OutOfSpace
        }
        other => {
            tracing::error!(error = %other, "storage error");
            ResultCode::ServerError
        }
    }
}

/// Maps a failed read-modify-write (`ShardStore::update`) to the result code the client sees:
/// the command's own refusal as it is, a storage failure as [`store_error_code`] maps it, and
/// a record that kept changing under the command as KEY_BUSY (14).
pub fn update_error_code(e: apogee_engine::shard::UpdateError<ResultCode>) -> ResultCode {
    use apogee_engine::shard::UpdateError;
    match e {
        UpdateError::Refused(rc) => rc,
        UpdateError::Store(e) => store_error_code(&e),
        UpdateError::Busy { attempts } => {
            tracing::debug!(
                attempts,
                "record kept changing during its read-modify-write"
            );
            ResultCode::KeyBusy
        }
    }
}

/// Appends `record` (synchronously: the caller's checks still hold) and waits for its commit.
pub async fn append_and_commit(
    store: &apogee_engine::shard::ShardStore,
    record: &apogee_engine::Record,
) -> Result<(), ResultCode> {
    let ticket = store.append(record).map_err(|e| store_error_code(&e))?;
    store.commit(ticket).await.map_err(|e| store_error_code(&e))
}

/// The namespace settings a write needs, read once per command (set-config may change them).
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    pub default_ttl: u32,
    pub max_record_size: usize,
}

/// Where a write leaves the version it stored, for replication: the whole new record, or a
/// tombstone for a delete; left `None` when the command stored nothing. Only a clustered
/// node's master asks (`Some(capture)`), so a node alone never copies a record for it.
pub type Image<'a> = Option<&'a mut Option<apogee_engine::Record>>;

/// Runs a validated keyed command against the shard store that owns its record.
///
/// `digest` names the record when the message does not carry it (a batch row's digest sits
/// beside its shared command); `None` reads the message's DIGEST field. `image`: see
/// [`Image`].
pub async fn execute(
    store: &apogee_engine::shard::ShardStore,
    limits: WriteLimits,
    msg: &Message,
    digest: Option<Digest>,
    image: Image<'_>,
) -> Reply {
    if let Err(rc) = validate(msg) {
        return Reply::code(rc);
    }
    let digest = match digest.map_or_else(|| digest_of(msg), Ok) {
        Ok(d) => d,
        Err(rc) => return Reply::code(rc),
    };
    let h = &msg.header;
    let result = if h.info2 & info2::WRITE != 0 {
        if h.info2 & info2::DELETE != 0 {
            delete::run(store, msg, digest, image).await
        } else {
            write::run(store, limits, msg, digest, image).await
        }
    } else if h.info1 & info1::READ != 0 {
        read::run(store, limits, msg, digest, image).await
    } else {
        Err(ResultCode::Parameter)
    };
    result.unwrap_or_else(Reply::code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_engine::shard::UpdateError;

    #[test]
    fn update_errors_map_to_the_codes_clients_expect() {
        assert_eq!(
            update_error_code(UpdateError::Refused(ResultCode::Generation)),
            ResultCode::Generation
        );
        assert_eq!(
            update_error_code(UpdateError::Busy { attempts: 8 }),
            ResultCode::KeyBusy
        );
        let full = StoreError::OutOfSpace {
            shard: 0,
            reason: "test".into(),
        };
        assert_eq!(
            update_error_code(UpdateError::Store(full)),
            ResultCode::OutOfSpace
        );
    }
}
