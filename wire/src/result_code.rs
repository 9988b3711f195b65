//! Aerospike result codes (spec §6.10): the one byte a reply uses to say what happened.

/// Result codes the server sends. Values are Aerospike's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ResultCode {
    Ok = 0,
    ServerError = 1,
    NotFound = 2,
    Generation = 3,
    Parameter = 4,
    RecordExists = 5,
    BinExists = 6,
    OutOfSpace = 8,
    Timeout = 9,
    /// The partition is not served by this node (AS_ERR_UNAVAILABLE).
    PartitionUnavailable = 11,
    IncompatibleType = 12,
    RecordTooBig = 13,
    KeyBusy = 14,
    UnsupportedFeature = 16,
    BinNotFound = 17,
    DeviceOverload = 18,
    Namespace = 20,
    BinName = 21,
    Forbidden = 22,
    ElementNotFound = 23,
    ElementExists = 24,
    OpNotApplicable = 26,
    FilteredOut = 27,
    SecurityNotEnabled = 52,
    /// A UDF failed; its message is in the reply's FAILURE bin (AS_ERR_UDF_EXECUTION).
    UdfBadResponse = 100,
    /// A GeoJSON bin value Aerospike would not store: not a shape it knows, coordinates out of
    /// range, a ring under 4 points or crossing itself (AS_ERR_GEO_INVALID_GEOJSON).
    GeoInvalidGeojson = 160,
    /// A query names a secondary index that does not exist (AS_ERR_SINDEX_NOT_FOUND).
    IndexNotFound = 201,
    /// The index exists but its background build has not finished (AS_ERR_SINDEX_NOT_READABLE).
    IndexNotReadable = 203,
}
