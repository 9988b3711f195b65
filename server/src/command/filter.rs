//! Filter expressions (field 43) and expression ops (7, 8) against stored records: adapts a
//! record, or the bins of a write in progress, to what the expression evaluator reads.
//!
//! A record that does not match its command's filter is answered with FILTERED_OUT (27) and
//! left untouched; a missing record is not filtered (there is nothing to test).

use apogee_engine::clock;
use apogee_engine::record::{Bin, Record};
use apogee_ops::exp::{self, Meta, RecordAccess};
use apogee_ops::Value;
use apogee_wire::msg::Message;
use apogee_wire::{FieldType, ResultCode};

use super::op_error_code;

/// Bins and metadata as an expression sees them.
pub struct View<'a> {
    pub bins: &'a [Bin],
    pub meta: &'a Meta,
}

impl RecordAccess for View<'_> {
    fn bin(&self, name: &[u8]) -> Option<(u8, &[u8])> {
        self.bins
            .iter()
            .find(|b| b.name == name)
            .map(|b| (b.particle_type, b.value.as_slice()))
    }

    fn meta(&self) -> &Meta {
        self.meta
    }
}

/// The metadata of a stored record for expressions.
pub fn meta_of(record: &Record) -> Meta {
    Meta {
        digest: record.digest.0,
        set_name: record.set_name.clone(),
        key: record
            .user_key
            .as_ref()
            .and_then(|k| Value::from_particle(k.particle_type, &k.bytes).ok()),
        void_time: record.meta.void_time,
        last_update_ms: record.meta.last_update_ms,
        record_bytes: record.encoded_bytes() as u64,
        now_ms: clock::now_ms(),
    }
}

/// True when the command carries a filter expression.
pub fn has_filter(msg: &Message) -> bool {
    msg.field(FieldType::FILTER_EXP).is_some()
}

/// Builds a filter expression without a record, as Aerospike does when the request arrives:
/// an ill-typed or malformed filter is PARAMETER_ERROR (4) whatever the records hold. A batch
/// checks its batch-level filter this way so a bad one fails the whole batch, not each row.
pub fn build(bytes: &[u8]) -> Result<(), ResultCode> {
    exp::parse_filter(bytes)
        .map(drop)
        .map_err(|e| op_error_code(&e))
}

/// Applies the command's filter expression, if any, to an existing record.
pub fn check(msg: &Message, record: &Record) -> Result<(), ResultCode> {
    let Some(bytes) = msg.field(FieldType::FILTER_EXP) else {
        return Ok(());
    };
    let meta = meta_of(record);
    let view = View {
        bins: &record.bins,
        meta: &meta,
    };
    match exp::filter(bytes, &view) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ResultCode::FilteredOut),
        Err(e) => Err(op_error_code(&e)),
    }
}

/// Evaluates an expression op's payload against `view`: the value, or `None` when the
/// expression was unknown and the op's flags say to carry on (EVAL_NO_FAIL).
pub fn evaluate_op(payload: &[u8], view: &View) -> Result<(Option<Value>, i64), ResultCode> {
    let (e, flags) = parse_op(payload)?;
    Ok((evaluate_parsed_op(&e, flags, view)?, flags))
}

/// Parses and type-checks an expression op's payload: the expression and the op's flags.
pub fn parse_op(payload: &[u8]) -> Result<(exp::Exp, i64), ResultCode> {
    exp::parse_op(payload).map_err(|e| op_error_code(&e))
}

/// Evaluates an expression op parsed by [`parse_op`] against `view`, as [`evaluate_op`].
pub fn evaluate_parsed_op(
    e: &exp::Exp,
    flags: i64,
    view: &View,
) -> Result<Option<Value>, ResultCode> {
    match exp::evaluate(e, view) {
        Ok(Some(v)) => Ok(Some(v)),
        Ok(None) if flags & exp::op_flag::EVAL_NO_FAIL != 0 => Ok(None),
        Ok(None) => Err(ResultCode::OpNotApplicable),
        Err(_) if flags & exp::op_flag::EVAL_NO_FAIL != 0 => Ok(None),
        Err(e) => Err(op_error_code(&e)),
    }
}
