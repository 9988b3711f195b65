//! Secondary-index definitions: what `sindex-create` says (Aerospike 8's syntax and error
//! strings), how `sindex-list` shows it, and the line each takes in the namespace's index
//! file. Parsing checks every parameter before anything changes; it never does I/O.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use apogee_engine::sindex::IndexId;
use apogee_ops::Value;
use base64::Engine as _;

use apogee_wire::info::InfoCommand;

/// Longest index name Aerospike accepts (`INAME_MAX_SZ` less its terminator).
pub const INDEX_NAME_BYTES_MAX: usize = 63;
/// Longest bin name (Aerospike's limit).
pub const BIN_NAME_BYTES_MAX: usize = 15;
/// Most indexes one namespace may have (Aerospike's limit).
pub const INDEXES_PER_NAMESPACE_MAX: usize = 256;
/// Longest context or expression, in base64 characters.
pub const DEFINITION_B64_BYTES_MAX: usize = 4096;

/// What values an index holds (`indexdata=<bin>,<type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Numeric,
    String,
    Blob,
    Geo,
}

impl DataType {
    pub fn name(self) -> &'static str {
        match self {
            DataType::Numeric => "numeric",
            DataType::String => "string",
            DataType::Blob => "blob",
            DataType::Geo => "geo2dsphere",
        }
    }

    fn parse(s: &str) -> Option<DataType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "numeric" => DataType::Numeric,
            "string" => DataType::String,
            "blob" => DataType::Blob,
            "geo2dsphere" => DataType::Geo,
            _ => return None,
        })
    }
}

/// Which part of a bin's value is indexed (`indextype=`; query field 26).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexType {
    Default,
    List,
    MapKeys,
    MapValues,
}

impl IndexType {
    pub fn name(self) -> &'static str {
        match self {
            IndexType::Default => "default",
            IndexType::List => "list",
            IndexType::MapKeys => "mapkeys",
            IndexType::MapValues => "mapvalues",
        }
    }

    fn parse(s: &str) -> Option<IndexType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "default" => IndexType::Default,
            "list" => IndexType::List,
            "mapkeys" => IndexType::MapKeys,
            "mapvalues" => IndexType::MapValues,
            _ => return None,
        })
    }

    /// The index type a query's field 26 names.
    pub fn from_wire(b: u8) -> Option<IndexType> {
        Some(match b {
            0 => IndexType::Default,
            1 => IndexType::List,
            2 => IndexType::MapKeys,
            3 => IndexType::MapValues,
            _ => return None,
        })
    }
}

/// A CDT context or an expression as given: base64 text, and the bytes it decodes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub b64: String,
    pub bytes: Vec<u8>,
}

/// What an index covers; two definitions are "the same index" when these are equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub set: Option<String>,
    /// The bin (empty for an expression index).
    pub bin: String,
    pub data: DataType,
    pub itype: IndexType,
    pub ctx: Option<Encoded>,
    pub exp: Option<Encoded>,
}

/// One index of a namespace, shared by the catalog and every shard that keeps its entries.
#[derive(Debug)]
pub struct Def {
    pub id: IndexId,
    pub name: String,
    pub shape: Shape,
    /// The context's steps, decoded once (`[type, value, type, value...]`).
    pub ctx_steps: Vec<Value>,
    /// The expression, parsed once.
    pub exp: Option<apogee_ops::exp::Exp>,
    /// How its build stands (shared by a renamed copy).
    pub build: Arc<BuildState>,
}

/// The progress of an index's background builds, summed over the shards.
#[derive(Debug, Default)]
pub struct BuildState {
    /// Shards whose build has finished.
    pub shards_built: AtomicUsize,
    /// Partitions the builds have walked.
    pub partitions_walked: AtomicU64,
    /// Records the builds indexed.
    pub records: AtomicU64,
}

impl Def {
    pub fn new(id: IndexId, name: String, shape: Shape) -> Result<Def, String> {
        let ctx_steps = match &shape.ctx {
            None => Vec::new(),
            Some(c) => ctx_steps(&c.bytes).ok_or("ERROR:4:'context' invalid cdt context")?,
        };
        let exp = match &shape.exp {
            None => None,
            Some(e) => Some(
                apogee_ops::exp::parse(&e.bytes).map_err(|_| "ERROR:4:'exp' invalid expression")?,
            ),
        };
        Ok(Def {
            id,
            name,
            shape,
            ctx_steps,
            exp,
            build: Arc::default(),
        })
    }

    /// Whether every one of `cores` shards has built it (queries may use it).
    pub fn readable(&self, cores: usize) -> bool {
        self.build.shards_built.load(Relaxed) >= cores
    }

    /// Build progress in percent, as `load_pct` reports it.
    pub fn load_pct(&self, cores: usize) -> u64 {
        if self.readable(cores) {
            return 100;
        }
        let total = cores as u64 * u64::from(apogee_wire::digest::PARTITION_COUNT);
        (self.build.partitions_walked.load(Relaxed) * 100 / total.max(1)).min(99)
    }

    /// `sindex-list`'s entry.
    pub fn list_entry(&self, ns: &str) -> String {
        let s = &self.shape;
        format!(
            "ns={ns}:indexname={}:set={}:bin={}:type={}:indextype={}:context={}:exp={}:state={}",
            self.name,
            s.set.as_deref().unwrap_or("null"),
            if s.bin.is_empty() { "null" } else { &s.bin },
            s.data.name(),
            s.itype.name(),
            s.ctx.as_ref().map_or("null", |c| &c.b64),
            s.exp.as_ref().map_or("null", |e| &e.b64),
            "RW",
        )
    }
}

/// A definition's fields in the index file and fabric bodies, tab-separated (info commands
/// cannot carry tabs, so no field holds one): name, set, bin, data type, index type,
/// context, expression; `-` for none.
pub fn shape_fields(name: &str, s: &Shape) -> String {
    let dash = |o: Option<&str>| o.unwrap_or("-").to_string();
    [
        name.to_string(),
        dash(s.set.as_deref()),
        if s.bin.is_empty() {
            "-".into()
        } else {
            s.bin.clone()
        },
        s.data.name().into(),
        s.itype.name().into(),
        dash(s.ctx.as_ref().map(|c| c.b64.as_str())),
        dash(s.exp.as_ref().map(|e| e.b64.as_str())),
    ]
    .join("\t")
}

/// Reads fields written by [`shape_fields`]; the context and expression are checked as
/// `sindex-create` checks them.
pub fn parse_shape_fields(line: &str) -> Result<(String, Shape), String> {
    let f: Vec<&str> = line.split('\t').collect();
    let [name, set, bin, data, itype, ctx, exp] = f[..] else {
        return Err(format!(
            "expected 7 tab-separated fields, found {}",
            f.len()
        ));
    };
    if name.is_empty() || name.len() > INDEX_NAME_BYTES_MAX {
        return Err(format!("bad index name {name:?}"));
    }
    let opt = |v: &str| (v != "-").then(|| v.to_string());
    let enc = |v: &str, what: &str| -> Result<Option<Encoded>, String> {
        opt(v)
            .map(|b64| decode_b64(&b64).map_err(|_| format!("{what} is not base64")))
            .transpose()
    };
    let shape = Shape {
        set: opt(set),
        bin: opt(bin).unwrap_or_default(),
        data: DataType::parse(data).ok_or(format!("unknown data type {data}"))?,
        itype: IndexType::parse(itype).ok_or(format!("unknown index type {itype}"))?,
        ctx: enc(ctx, "context")?,
        exp: enc(exp, "expression")?,
    };
    Def::new(0, name.to_string(), shape.clone())?;
    Ok((name.to_string(), shape))
}

fn decode_b64(b64: &str) -> Result<Encoded, base64::DecodeError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(Encoded {
        b64: b64.to_string(),
        bytes,
    })
}

/// A context's steps from its msgpack bytes (an array of (type, value) pairs), or `None`
/// when it is not one.
pub fn ctx_steps(bytes: &[u8]) -> Option<Vec<Value>> {
    match apogee_ops::value::decode(bytes).ok()? {
        Value::List(l)
            if !l.items.is_empty()
                && l.items.len().is_multiple_of(2)
                && l.items.chunks(2).all(|p| p[0].as_int().is_some()) =>
        {
            Some(l.items)
        }
        _ => None,
    }
}

/// A parsed `sindex-create`: the namespace it names, the index name and what it covers.
pub struct Create {
    pub namespace: String,
    pub name: String,
    pub shape: Shape,
}

/// The namespace parameter (`namespace=` or the older `ns=`).
pub fn namespace_param<'a>(cmd: &InfoCommand<'a>) -> Result<&'a str, String> {
    match cmd.param("namespace").or_else(|| cmd.param("ns")) {
        None | Some("") => Err("ERROR:20:missing 'namespace'".into()),
        Some(ns) => Ok(ns),
    }
}

/// The index-name parameter.
pub fn name_param<'a>(cmd: &InfoCommand<'a>) -> Result<&'a str, String> {
    match cmd.param("indexname") {
        None | Some("") => Err("ERROR:4:missing 'indexname'".into()),
        Some(n) if n.len() > INDEX_NAME_BYTES_MAX => {
            Err("ERROR:4:'indexname' value too long".into())
        }
        Some(n) => Ok(n),
    }
}

/// Parses `sindex-create` with Aerospike's parameters (`ns`/`namespace`, `set`, `indexname`,
/// `indextype`, `indexdata=<bin>,<type>` or the older `bin=` and `type=`, `context`, `exp`),
/// answering Aerospike's error line for the first bad one.
pub fn parse_create(cmd: &InfoCommand<'_>) -> Result<Create, String> {
    let namespace = namespace_param(cmd)?.to_string();
    let name = name_param(cmd)?.to_string();
    let set = match cmd.param("set") {
        None | Some("") => None,
        Some(s) if s.len() > apogee_engine::record::SET_NAME_BYTES_MAX => {
            return Err("ERROR:4:'set' value too long".into())
        }
        Some(s) => Some(s.to_string()),
    };
    let itype = match cmd.param("indextype") {
        None => IndexType::Default,
        Some(t) => IndexType::parse(t).ok_or(
            "ERROR:4:bad 'indextype' - must be one of 'default', 'list', 'mapkeys', 'mapvalues'",
        )?,
    };
    let exp = match cmd.param("exp") {
        None => None,
        Some(e) if e.len() > DEFINITION_B64_BYTES_MAX => {
            return Err("ERROR:4:'exp' too long".into())
        }
        Some(e) => Some(decode_b64(e).map_err(|_| "ERROR:4:'exp' invalid base64")?),
    };
    let (bin, data) = match (cmd.param("indexdata"), cmd.param("type")) {
        (Some(d), _) => {
            let Some((bin, ty)) = d.split_once(',') else {
                return Err("ERROR:4:'indexdata' missing bin type".into());
            };
            (bin, ty)
        }
        (None, Some(ty)) => (cmd.param("bin").unwrap_or(""), ty),
        (None, None) => return Err("ERROR:4:both 'indexdata' and 'type' are missing".into()),
    };
    if exp.is_none() && bin.is_empty() {
        return Err("ERROR:4:'indexdata' missing bin".into());
    }
    if bin.len() > BIN_NAME_BYTES_MAX {
        return Err("ERROR:4:'indexdata' bin name too long".into());
    }
    let data = DataType::parse(data).ok_or(
        "ERROR:4:bad 'indexdata' bin type - must be one of 'numeric', 'string', 'blob', 'geo2dsphere'",
    )?;
    let ctx = match cmd.param("context") {
        None => None,
        Some(c) if c.len() > DEFINITION_B64_BYTES_MAX => {
            return Err("ERROR:4:'context' too long".into())
        }
        Some(c) => {
            let e = decode_b64(c).map_err(|_| "ERROR:4:'context' invalid base64")?;
            ctx_steps(&e.bytes).ok_or("ERROR:4:'context' invalid cdt context")?;
            Some(e)
        }
    };
    Ok(Create {
        namespace,
        name,
        shape: Shape {
            set,
            bin: bin.to_string(),
            data,
            itype,
            ctx,
            exp,
        },
    })
}

/// Shared handle to a definition.
pub type DefRef = Arc<Def>;

#[cfg(test)]
mod tests {
    use super::*;

    fn create(args: &str) -> Result<Create, String> {
        let line = format!("sindex-create:{args}");
        let cmds = apogee_wire::info::parse_request(line.as_bytes()).unwrap();
        parse_create(&cmds[0])
    }

    #[test]
    fn create_reads_both_syntaxes_and_refuses_with_aerospikes_errors() {
        let c = create("ns=test;set=demo;indexname=i;numbins=1;indextype=MAPKEYS;indexdata=m,STRING;priority=normal").unwrap();
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("test", "i"));
        assert_eq!(c.shape.itype, IndexType::MapKeys);
        assert_eq!(c.shape.data, DataType::String);
        assert_eq!(c.shape.set.as_deref(), Some("demo"));
        let old = create("ns=test;indexname=i;bin=a;type=numeric").unwrap();
        assert_eq!(
            (old.shape.bin.as_str(), old.shape.data),
            ("a", DataType::Numeric)
        );
        let err = |a: &str| create(a).err().unwrap();
        assert_eq!(
            err("indexname=i;indexdata=a,numeric"),
            "ERROR:20:missing 'namespace'"
        );
        assert_eq!(
            err("ns=test;indexdata=a,numeric"),
            "ERROR:4:missing 'indexname'"
        );
        assert_eq!(
            err("ns=test;indexname=i"),
            "ERROR:4:both 'indexdata' and 'type' are missing"
        );
        assert_eq!(
            err("ns=test;indexname=i;indexdata=a"),
            "ERROR:4:'indexdata' missing bin type"
        );
        assert!(err("ns=test;indexname=i;indexdata=a,foo").starts_with("ERROR:4:bad 'indexdata'"));
        assert!(err("ns=test;indexname=i;indextype=x;indexdata=a,numeric")
            .starts_with("ERROR:4:bad 'indextype'"));
        assert_eq!(
            err("ns=test;indexname=i;indexdata=a,numeric;context=zzz"),
            "ERROR:4:'context' invalid base64"
        );
        assert_eq!(
            err("ns=test;indexname=i;indexdata=a,numeric;context=kwAA"),
            "ERROR:4:'context' invalid cdt context"
        );
        assert_eq!(
            err(&format!(
                "ns=test;indexname={};indexdata=a,numeric",
                "n".repeat(64)
            )),
            "ERROR:4:'indexname' value too long"
        );
        assert_eq!(
            err(&format!(
                "ns=test;set={};indexname=i;indexdata=a,numeric",
                "s".repeat(64)
            )),
            "ERROR:4:'set' value too long"
        );
    }

    #[test]
    fn a_definition_survives_its_fields() {
        let c =
            create("ns=test;set=demo;indexname=i;context=khAA;indextype=list;indexdata=l,numeric")
                .unwrap();
        let d = Def::new(1, c.name, c.shape).unwrap();
        assert_eq!(d.ctx_steps.len(), 2);
        let (name, shape) = parse_shape_fields(&shape_fields(&d.name, &d.shape)).unwrap();
        assert_eq!((name.as_str(), &shape), ("i", &d.shape));
        assert!(d.list_entry("test").contains(":context=khAA:"));
        assert!(parse_shape_fields("i\t-\ta").is_err());
    }
}
