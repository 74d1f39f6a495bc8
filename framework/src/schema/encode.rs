//! Avro binary encoding of `apache_avro::types::Value`s, directed by a plan
//! compiled once per schema.
//!
//! apache-avro's writer validates a value (one walk, resolving names as it
//! goes) and then encodes it (a second walk, building a hash map per
//! record). [`Encoder`] does both in one walk over a plan where names are
//! resolved, record fields are in writing order and union branches are
//! indexed, writing straight into the output `Vec`.
//!
//! The contract, checked by the property tests below against apache-avro's
//! `GenericDatumWriter`:
//! - a value apache-avro writes is written byte for byte the same (arrays and
//!   maps as one block then `0`, as apache-avro writes them);
//! - a value apache-avro refuses is refused, naming the field
//!   (`address.city`, `tags[2]`, `attributes["k"]`) and why. Nothing is
//!   coerced beyond what apache-avro itself accepts, and that is accepted
//!   with its bytes: an `int` where a `long` belongs (same bytes), a string
//!   naming an enum symbol, `bytes` of the right length for a `fixed`, a bare
//!   `null` for a union with a `null` branch, record fields in any order or
//!   named by an alias. A `Value::Union` is written with the branch its index
//!   names; a value that does not fit that branch is refused even if it would
//!   fit another. A bare record for a union is written as the first branch
//!   apache-avro can write it as, if it fits that branch and apache-avro's
//!   validation accepts it;
//! - a value apache-avro would accept but write as something else is refused,
//!   the reason saying so (a deliberate difference; the bytes would be
//!   unreadable or read back as another value): a bare non-null, non-record
//!   value for a union (written without its branch index), a `float` for a
//!   `double` (4 bytes where readers read 8), a `Value::Fixed` whose bytes
//!   are not its stated size, or given for a decimal of another size or a
//!   `bytes` decimal, an enum index past the symbols, a bare record that
//!   does not fit the branch apache-avro would write it as. apache-avro
//!   panics on some bare records (a union index past the branches inside);
//!   those are refused.
//!
//! Decimal precision is not checked (apache-avro does not either).

use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, Name, NamespaceRef, RecordSchema, ResolvedSchema, UuidSchema,
};
use apache_avro::types::Value;
use apache_avro::{Decimal, Schema};
use std::collections::HashMap;

/// A value that does not fit: `field` is its path (empty for the value
/// itself) and `reason` says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub field: String,
    pub reason: String,
}

/// A schema compiled for writing; it borrows the schema (for apache-avro's
/// validation of the rare bare record in a union).
#[derive(Debug)]
pub(crate) struct Encoder<'s> {
    nodes: Vec<Node<'s>>,
    root: usize,
    names: HashMap<Name, &'s Schema>,
}

#[derive(Debug)]
enum Node<'s> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
    /// `fixed` is the size of a fixed-backed decimal, `None` for bytes.
    Decimal {
        fixed: Option<usize>,
    },
    BigDecimal,
    UuidString,
    UuidBytes,
    UuidFixed {
        size: usize,
    },
    Duration {
        size: usize,
    },
    Fixed {
        name: String,
        size: usize,
    },
    Enum {
        name: String,
        symbols: Vec<String>,
    },
    Array(usize),
    Map(usize),
    Union {
        branches: Vec<usize>,
        /// The position of the `null` branch: a bare `Value::Null` takes it.
        null: Option<usize>,
        schema: &'s Schema,
    },
    Record(Box<Record>),
    /// A named type under construction (a record's fields may refer back).
    Pending,
}

#[derive(Debug)]
struct Record {
    name: String,
    fields: Vec<Field>,
    /// apache-avro's table from field names and aliases to field positions
    /// (a later field's alias can shadow an earlier name).
    lookup: HashMap<String, usize>,
    /// Every field's name finds that field in `lookup`: entries named as the
    /// fields, in order, need no lookup.
    in_order: bool,
    /// Fields that are not nullable unions: apache-avro refuses a record with
    /// fewer entries.
    required: usize,
}

#[derive(Debug)]
struct Field {
    name: String,
    aliases: Vec<String>,
    node: usize,
}

/// The schema refers to a name it does not define.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CompileError(String);

impl<'s> Encoder<'s> {
    /// Compiles `schema`: names resolved, fields in writing order.
    pub(crate) fn new(schema: &'s Schema) -> Result<Self, CompileError> {
        let resolved = ResolvedSchema::try_from(schema).map_err(|e| CompileError(e.to_string()))?;
        let mut compiler = Compiler {
            names: resolved.get_names(),
            nodes: Vec::new(),
            named: HashMap::new(),
        };
        let root = compiler.compile(schema, None)?;
        Ok(Self {
            nodes: compiler.nodes,
            root,
            names: resolved.get_names().clone(),
        })
    }

    /// Appends the Avro binary encoding of `value` to `out`. On refusal `out`
    /// holds a partial datum: truncate it.
    pub(crate) fn write(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), Refusal> {
        self.put(self.root, value, out)
            .map_err(|f| (*f).into_refusal())
    }
}

struct Compiler<'a, 's> {
    names: &'a HashMap<Name, &'s Schema>,
    nodes: Vec<Node<'s>>,
    /// Named types compiled (or being compiled), by full name.
    named: HashMap<Name, usize>,
}

impl<'s> Compiler<'_, 's> {
    fn push(&mut self, node: Node<'s>) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Reserves a node for the named type `name`, or returns the one it has.
    fn reserve(&mut self, name: &Name, ns: NamespaceRef<'_>) -> Result<usize, usize> {
        let full = name.fully_qualified_name(ns).into_owned();
        if let Some(&id) = self.named.get(&full) {
            return Err(id);
        }
        let id = self.push(Node::Pending);
        self.named.insert(full, id);
        Ok(id)
    }

    fn define(&mut self, name: &Name, ns: NamespaceRef<'_>, node: Node<'s>) -> usize {
        match self.reserve(name, ns) {
            Ok(id) | Err(id) => {
                self.nodes[id] = node;
                id
            }
        }
    }

    // `ns` is the enclosing namespace, carried as apache-avro's validation
    // carries it.
    fn compile(&mut self, schema: &'s Schema, ns: NamespaceRef<'_>) -> Result<usize, CompileError> {
        let full = |n: &Name| n.fully_qualified_name(ns).fullname(None);
        Ok(match schema {
            Schema::Null => self.push(Node::Null),
            Schema::Boolean => self.push(Node::Boolean),
            Schema::Int => self.push(Node::Int),
            Schema::Long => self.push(Node::Long),
            Schema::Float => self.push(Node::Float),
            Schema::Double => self.push(Node::Double),
            Schema::Bytes => self.push(Node::Bytes),
            Schema::String => self.push(Node::String),
            Schema::Date => self.push(Node::Date),
            Schema::TimeMillis => self.push(Node::TimeMillis),
            Schema::TimeMicros => self.push(Node::TimeMicros),
            Schema::TimestampMillis => self.push(Node::TimestampMillis),
            Schema::TimestampMicros => self.push(Node::TimestampMicros),
            Schema::TimestampNanos => self.push(Node::TimestampNanos),
            Schema::LocalTimestampMillis => self.push(Node::LocalTimestampMillis),
            Schema::LocalTimestampMicros => self.push(Node::LocalTimestampMicros),
            Schema::LocalTimestampNanos => self.push(Node::LocalTimestampNanos),
            Schema::BigDecimal => self.push(Node::BigDecimal),
            Schema::Decimal(DecimalSchema { inner, .. }) => match inner {
                InnerDecimalSchema::Bytes => self.push(Node::Decimal { fixed: None }),
                InnerDecimalSchema::Fixed(f) => self.define(
                    &f.name,
                    ns,
                    Node::Decimal {
                        fixed: Some(f.size),
                    },
                ),
            },
            Schema::Uuid(UuidSchema::String) => self.push(Node::UuidString),
            Schema::Uuid(UuidSchema::Bytes) => self.push(Node::UuidBytes),
            Schema::Uuid(UuidSchema::Fixed(f)) => {
                self.define(&f.name, ns, Node::UuidFixed { size: f.size })
            }
            Schema::Duration(f) => self.define(&f.name, ns, Node::Duration { size: f.size }),
            Schema::Fixed(f) => self.define(
                &f.name,
                ns,
                Node::Fixed {
                    name: full(&f.name),
                    size: f.size,
                },
            ),
            Schema::Enum(e) => self.define(
                &e.name,
                ns,
                Node::Enum {
                    name: full(&e.name),
                    symbols: e.symbols.clone(),
                },
            ),
            Schema::Array(a) => {
                let item = self.compile(&a.items, ns)?;
                self.push(Node::Array(item))
            }
            Schema::Map(m) => {
                let values = self.compile(&m.types, ns)?;
                self.push(Node::Map(values))
            }
            Schema::Union(u) => {
                let branches = u
                    .variants()
                    .iter()
                    .map(|b| self.compile(b, ns))
                    .collect::<Result<Vec<_>, _>>()?;
                let null = u.variants().iter().position(|b| *b == Schema::Null);
                self.push(Node::Union {
                    branches,
                    null,
                    schema,
                })
            }
            Schema::Record(r) => self.record(r, ns)?,
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns);
                if let Some(&id) = self.named.get(full.as_ref()) {
                    return Ok(id);
                }
                let target = self.names.get(full.as_ref()).ok_or_else(|| {
                    CompileError(format!("undefined type `{}`", full.fullname(None)))
                })?;
                self.compile(target, full.namespace())?
            }
        })
    }

    fn record(&mut self, r: &'s RecordSchema, ns: NamespaceRef<'_>) -> Result<usize, CompileError> {
        let id = match self.reserve(&r.name, ns) {
            Ok(id) => id,
            Err(id) => return Ok(id),
        };
        let inner_ns = r.name.namespace().or(ns);
        let mut fields = Vec::with_capacity(r.fields.len());
        for f in &r.fields {
            fields.push(Field {
                name: f.name.clone(),
                aliases: f.aliases.clone(),
                node: self.compile(&f.schema, inner_ns)?,
            });
        }
        let in_order = r
            .fields
            .iter()
            .enumerate()
            .all(|(i, f)| r.lookup.get(&f.name) == Some(&i));
        self.nodes[id] = Node::Record(Box::new(Record {
            name: r.name.fully_qualified_name(ns).fullname(None),
            fields,
            lookup: r.lookup.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            in_order,
            required: r.fields.iter().filter(|f| !f.is_nullable()).count(),
        }));
        Ok(id)
    }
}

/// A refusal on its way up: `path` is built innermost first, only on error.
#[derive(Debug)]
struct Fault {
    path: Vec<Seg>,
    reason: String,
}

#[derive(Debug)]
enum Seg {
    Field(String),
    Index(usize),
    Key(String),
}

impl Fault {
    fn new(reason: String) -> Box<Self> {
        Box::new(Self {
            path: Vec::new(),
            reason,
        })
    }

    fn at(mut self: Box<Self>, seg: Seg) -> Box<Self> {
        self.path.push(seg);
        self
    }

    fn into_refusal(self) -> Refusal {
        let mut field = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Field(name) if field.is_empty() => field.push_str(name),
                Seg::Field(name) => {
                    field.push('.');
                    field.push_str(name);
                }
                Seg::Index(i) => field.push_str(&format!("[{i}]")),
                Seg::Key(k) => field.push_str(&format!("[{k:?}]")),
            }
        }
        Refusal {
            field,
            reason: self.reason,
        }
    }
}

type Step = Result<(), Box<Fault>>;

fn refuse(reason: String) -> Step {
    Err(Fault::new(reason))
}

/// The phrase that marks a refusal of a value apache-avro would have written
/// as something else (see the module doc).
const WRITTEN_WRONG: &str = "apache-avro would write";

/// What apache-avro's encoder (which runs after its validation, and does not
/// check types it need not look at) does with a value: writes it, fails, or
/// panics (a union index past the branches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loose {
    Writes,
    Fails,
    Panics,
}

impl Encoder<'_> {
    fn put(&self, id: usize, v: &Value, out: &mut Vec<u8>) -> Step {
        let node = &self.nodes[id];
        match (node, v) {
            (Node::Null, Value::Null) => {}
            (Node::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
            (Node::Int | Node::Long | Node::Date | Node::TimeMillis, Value::Int(n))
            | (Node::Date, Value::Date(n))
            | (Node::TimeMillis, Value::TimeMillis(n)) => long(out, i64::from(*n)),
            (
                Node::Long
                | Node::TimeMicros
                | Node::TimestampMillis
                | Node::TimestampMicros
                | Node::LocalTimestampMillis
                | Node::LocalTimestampMicros,
                Value::Long(n),
            )
            | (Node::TimeMicros, Value::TimeMicros(n))
            | (Node::TimestampMillis, Value::TimestampMillis(n))
            | (Node::TimestampMicros, Value::TimestampMicros(n))
            | (Node::TimestampNanos, Value::TimestampNanos(n))
            | (Node::LocalTimestampMillis, Value::LocalTimestampMillis(n))
            | (Node::LocalTimestampMicros, Value::LocalTimestampMicros(n))
            | (Node::LocalTimestampNanos, Value::LocalTimestampNanos(n)) => long(out, *n),
            (Node::Float, Value::Float(x)) => out.extend_from_slice(&x.to_le_bytes()),
            (Node::Double, Value::Double(x)) => out.extend_from_slice(&x.to_le_bytes()),
            (Node::Double, Value::Float(_)) => {
                return refuse(format!(
                    "a float does not fit double: give a double ({WRITTEN_WRONG} it in 4 bytes where readers read 8)"
                ))
            }
            (Node::Bytes, Value::Bytes(b)) => bytes(out, b),
            (Node::UuidBytes, Value::Bytes(b)) if b.len() == 16 => bytes(out, b),
            (Node::UuidBytes, Value::Bytes(b)) => {
                return refuse(format!("{} bytes do not fit a 16-byte UUID", b.len()))
            }
            (Node::String, Value::String(s)) => bytes(out, s.as_bytes()),
            // Written as given (byte-identical to apache-avro), but only
            // in RFC 4122's hyphenated form, as the spec asks: apache-avro
            // writes any string of 32 bytes or more, and readers that parse
            // the field (Java's `UUID.fromString`) refuse the rest.
            (Node::UuidString, Value::String(s))
                if s.len() == 36 && uuid::Uuid::try_parse(s).is_ok() =>
            {
                bytes(out, s.as_bytes())
            }
            (Node::UuidString, Value::String(s)) => {
                return refuse(format!(
                    "`{}` is not a UUID in its hyphenated form (8-4-4-4-12 hex digits)",
                    s.chars().take(64).collect::<String>()
                ))
            }
            (Node::UuidString, Value::Uuid(u)) => bytes(
                out,
                u.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    .as_bytes(),
            ),
            (Node::UuidBytes, Value::Uuid(u)) => bytes(out, u.as_bytes()),
            (Node::UuidFixed { size: 16 }, Value::Uuid(u)) => out.extend_from_slice(u.as_bytes()),
            (Node::Duration { size: 12 }, Value::Duration(d)) => {
                out.extend_from_slice(&<[u8; 12]>::from(d));
            }
            (
                Node::Fixed { size, .. }
                | Node::Decimal { fixed: Some(size) }
                | Node::Duration { size: size @ 12 }
                | Node::UuidFixed { size: size @ 16 },
                Value::Fixed(n, b),
            ) if n == size => {
                if b.len() != *n {
                    return refuse(format!(
                        "a fixed value of size {n} holds {} bytes ({WRITTEN_WRONG} the {})",
                        b.len(),
                        b.len()
                    ));
                }
                out.extend_from_slice(b);
            }
            (Node::Fixed { size, .. }, Value::Bytes(b)) if b.len() == *size => {
                out.extend_from_slice(b);
            }
            (Node::Decimal { fixed }, Value::Decimal(d)) => decimal(out, d, *fixed)?,
            (Node::Decimal { fixed }, Value::Fixed(n, _)) => {
                return refuse(match fixed {
                    Some(size) => format!(
                        "a fixed value of size {n} does not fit a decimal of {size} bytes ({WRITTEN_WRONG} its {n} bytes)"
                    ),
                    None => format!(
                        "a fixed value does not fit a bytes decimal: give a decimal ({WRITTEN_WRONG} it without its length)"
                    ),
                })
            }
            (Node::BigDecimal, Value::BigDecimal(d)) => {
                let (int, exponent) = d.as_bigint_and_exponent();
                let mut inner = Vec::new();
                bytes(&mut inner, &int.to_signed_bytes_be());
                long(&mut inner, exponent);
                bytes(out, &inner);
            }
            (Node::Enum { symbols, .. }, Value::String(s)) => {
                match symbols.iter().position(|x| x == s) {
                    Some(i) => long(out, i as i64),
                    None => {
                        return refuse(format!(
                            "{s:?} is not a symbol of {}",
                            self.describe(id)
                        ))
                    }
                }
            }
            (Node::Enum { symbols, .. }, Value::Enum(i, s)) => match symbols.get(*i as usize) {
                Some(x) if x == s => long(out, i64::from(*i)),
                Some(x) => {
                    return refuse(format!(
                        "enum value {s:?} at index {i}, where {} has {x:?}",
                        self.describe(id)
                    ))
                }
                None => {
                    return refuse(format!(
                        "enum index {i} is past the {} symbols of {} ({WRITTEN_WRONG} the index if the enum has a default)",
                        symbols.len(),
                        self.describe(id)
                    ))
                }
            },
            (Node::Array(item), Value::Array(items)) => {
                if !items.is_empty() {
                    long(out, items.len() as i64);
                    for (i, x) in items.iter().enumerate() {
                        self.put(*item, x, out).map_err(|f| f.at(Seg::Index(i)))?;
                    }
                }
                out.push(0);
            }
            (Node::Map(values), Value::Map(entries)) => {
                if !entries.is_empty() {
                    long(out, entries.len() as i64);
                    for (k, x) in entries {
                        bytes(out, k.as_bytes());
                        self.put(*values, x, out)
                            .map_err(|f| f.at(Seg::Key(k.clone())))?;
                    }
                }
                out.push(0);
            }
            (Node::Union { branches, .. }, Value::Union(i, x)) => {
                let Some(&branch) = branches.get(*i as usize) else {
                    return refuse(format!(
                        "union index {i} is past the {} branches of {}",
                        branches.len(),
                        self.describe(id)
                    ));
                };
                long(out, i64::from(*i));
                self.put(branch, x, out).map_err(|mut f| {
                    if f.path.is_empty() {
                        f.reason = format!("union branch {i}: {}", f.reason);
                    }
                    f
                })?;
            }
            (Node::Union { null: Some(i), .. }, Value::Null) => long(out, *i as i64),
            (Node::Union { .. }, Value::Record(_)) => self.bare_record(id, v, out)?,
            (Node::Union { .. }, _) => {
                let written = !matches!(
                    v,
                    Value::Null
                        | Value::String(_)
                        | Value::Bytes(_)
                        | Value::Decimal(_)
                        | Value::Uuid(_)
                        | Value::Array(_)
                        | Value::Map(_)
                );
                return refuse(format!(
                    "{} given without its union branch does not fit {}: give a Value::Union{}",
                    kind(v),
                    self.describe(id),
                    if written {
                        format!(" ({WRITTEN_WRONG} it without the branch index)")
                    } else {
                        String::new()
                    }
                ));
            }
            (Node::Record(r), Value::Record(entries)) => self.record(r, entries, out)?,
            _ => return refuse(format!("{} does not fit {}", kind(v), self.describe(id))),
        }
        Ok(())
    }

    fn record(&self, r: &Record, entries: &[(String, Value)], out: &mut Vec<u8>) -> Step {
        // The usual shape: every field, by name, in schema order.
        if r.in_order && entries.len() == r.fields.len() {
            let start = out.len();
            let mut in_order = true;
            for (f, (name, x)) in r.fields.iter().zip(entries) {
                if *name != f.name {
                    in_order = false;
                    break;
                }
                self.put(f.node, x, out)
                    .map_err(|e| e.at(Seg::Field(f.name.clone())))?;
            }
            if in_order {
                return Ok(());
            }
            out.truncate(start);
        }
        // apache-avro's rules. Validation: no more entries than fields, no
        // fewer than the required fields, each entry fits the field its name
        // finds in the lookup table. Writing: each field from the entry named
        // as it (the last, if repeated), else as its first alias that has one.
        if let Some((name, _)) = entries.iter().find(|(n, _)| !r.lookup.contains_key(n)) {
            return Err(Fault::new("not in the schema".to_owned()).at(Seg::Field(name.clone())));
        }
        let chosen: Vec<Option<usize>> = r.fields.iter().map(|f| source(f, entries)).collect();
        if let Some(f) = r
            .fields
            .iter()
            .zip(&chosen)
            .find_map(|(f, c)| c.is_none().then_some(f))
        {
            return Err(Fault::new("missing".to_owned()).at(Seg::Field(f.name.clone())));
        }
        if entries.len() > r.fields.len() {
            let extra = (0..entries.len()).find(|i| !chosen.contains(&Some(*i)));
            let name = extra.map_or_else(String::new, |i| entries[i].0.clone());
            return Err(Fault::new(format!(
                "given more than once ({} entries for {} fields)",
                entries.len(),
                r.fields.len()
            ))
            .at(Seg::Field(name)));
        }
        if entries.len() < r.required {
            return refuse(format!(
                "{} entries for the {} required fields of record {}",
                entries.len(),
                r.required,
                r.name
            ));
        }
        // Entries validated but not written as the field they name.
        let mut scratch = Vec::new();
        for (i, (name, x)) in entries.iter().enumerate() {
            let at = r.lookup[name];
            if chosen[at] != Some(i) {
                self.put(r.fields[at].node, x, &mut scratch)
                    .map_err(|e| e.at(Seg::Field(name.clone())))?;
            }
        }
        for (f, c) in r.fields.iter().zip(chosen) {
            let x = &entries[c.unwrap_or_default()].1;
            self.put(f.node, x, out)
                .map_err(|e| e.at(Seg::Field(f.name.clone())))?;
        }
        Ok(())
    }

    /// A record given for a union without its branch. apache-avro validates
    /// it by schema resolution against each record branch, then writes it as
    /// the first branch its encoder gets through (which checks little).
    /// Ferry writes it as that branch if it fits, and only if apache-avro's
    /// validation accepts it too.
    fn bare_record(&self, id: usize, v: &Value, out: &mut Vec<u8>) -> Step {
        let Node::Union {
            branches, schema, ..
        } = &self.nodes[id]
        else {
            return refuse("not a union".to_owned());
        };
        for (j, &b) in branches.iter().enumerate() {
            match self.loose(b, v) {
                Loose::Fails => continue,
                Loose::Panics => {
                    // The branch has a union index past its branches:
                    // refused, with the path to it.
                    self.put(b, v, &mut Vec::new())?;
                    return refuse(format!("apache-avro panics writing it as branch {j}"));
                }
                Loose::Writes => {
                    let start = out.len();
                    long(out, j as i64);
                    if let Err(mut f) = self.put(b, v, out) {
                        f.reason = if validates_safely(v)
                            && v.validate_with_names(schema, &self.names)
                        {
                            format!(
                                "{WRITTEN_WRONG} the record (given without its union branch) as branch {j}, {}, which it does not fit: {}",
                                self.describe(b),
                                f.reason
                            )
                        } else {
                            format!(
                                "the record (given without its union branch) does not fit branch {j}, {}, the first apache-avro could write it as: {}",
                                self.describe(b),
                                f.reason
                            )
                        };
                        return Err(f);
                    }
                    if validates_safely(v) && v.validate_with_names(schema, &self.names) {
                        return Ok(());
                    }
                    out.truncate(start);
                    break;
                }
            }
        }
        refuse(format!(
            "a record given without its union branch fits none of the branches of {} by apache-avro's rules (it resolves the record by field names, not aliases): give a Value::Union",
            self.describe(id)
        ))
    }

    /// What apache-avro's encoder does with `v` as node `id` (see [`Loose`]).
    fn loose(&self, id: usize, v: &Value) -> Loose {
        let node = &self.nodes[id];
        let ok = |b: bool| if b { Loose::Writes } else { Loose::Fails };
        match v {
            Value::Null => ok(!matches!(node, Node::Union { null: None, .. })),
            Value::Decimal(d) => match node {
                Node::Decimal { fixed } => ok(decimal(&mut Vec::new(), d, *fixed).is_ok()),
                _ => Loose::Fails,
            },
            Value::Uuid(_) => match node {
                Node::UuidString | Node::String | Node::UuidBytes | Node::Bytes => Loose::Writes,
                Node::UuidFixed { size } | Node::Fixed { size, .. } => ok(*size == 16),
                _ => Loose::Fails,
            },
            Value::Bytes(_) => ok(matches!(
                node,
                Node::Bytes | Node::UuidBytes | Node::Fixed { .. }
            )),
            Value::String(s) => match node {
                Node::String | Node::UuidString => Loose::Writes,
                Node::Enum { symbols, .. } => ok(symbols.contains(s)),
                _ => Loose::Fails,
            },
            Value::Union(i, x) => match node {
                Node::Union { branches, .. } => match branches.get(*i as usize) {
                    Some(&b) => self.loose(b, x),
                    None => Loose::Panics,
                },
                _ => Loose::Fails,
            },
            Value::Array(items) => match node {
                Node::Array(item) => self.loose_all(items.iter().map(|x| (*item, x))),
                _ => Loose::Fails,
            },
            Value::Map(entries) => match node {
                Node::Map(values) => self.loose_all(entries.values().map(|x| (*values, x))),
                _ => Loose::Fails,
            },
            Value::Record(entries) => match node {
                Node::Record(r) => {
                    let mut fields = Vec::with_capacity(r.fields.len());
                    for f in &r.fields {
                        match source(f, entries) {
                            Some(i) => fields.push((f.node, &entries[i].1)),
                            None => return Loose::Fails,
                        }
                    }
                    self.loose_all(fields)
                }
                Node::Union { branches, .. } => branches
                    .iter()
                    .map(|&b| self.loose(b, v))
                    .find(|l| *l != Loose::Fails)
                    .unwrap_or(Loose::Fails),
                _ => Loose::Fails,
            },
            _ => Loose::Writes,
        }
    }

    fn loose_all<'v>(&self, items: impl IntoIterator<Item = (usize, &'v Value)>) -> Loose {
        items
            .into_iter()
            .map(|(id, x)| self.loose(id, x))
            .find(|l| *l != Loose::Writes)
            .unwrap_or(Loose::Writes)
    }

    /// A schema node in words, for refusals: `string`, `[null, string]`,
    /// `record io.ferry.Contact`.
    fn describe(&self, id: usize) -> String {
        match &self.nodes[id] {
            Node::Null => "null".into(),
            Node::Boolean => "boolean".into(),
            Node::Int => "int".into(),
            Node::Long => "long".into(),
            Node::Float => "float".into(),
            Node::Double => "double".into(),
            Node::Bytes => "bytes".into(),
            Node::String => "string".into(),
            Node::Date => "int (date)".into(),
            Node::TimeMillis => "int (time-millis)".into(),
            Node::TimeMicros => "long (time-micros)".into(),
            Node::TimestampMillis => "long (timestamp-millis)".into(),
            Node::TimestampMicros => "long (timestamp-micros)".into(),
            Node::TimestampNanos => "long (timestamp-nanos)".into(),
            Node::LocalTimestampMillis => "long (local-timestamp-millis)".into(),
            Node::LocalTimestampMicros => "long (local-timestamp-micros)".into(),
            Node::LocalTimestampNanos => "long (local-timestamp-nanos)".into(),
            Node::Decimal { fixed: None } => "bytes (decimal)".into(),
            Node::Decimal { fixed: Some(n) } => format!("fixed of {n} bytes (decimal)"),
            Node::BigDecimal => "bytes (big-decimal)".into(),
            Node::UuidString => "string (uuid)".into(),
            Node::UuidBytes => "bytes (uuid)".into(),
            Node::UuidFixed { size } => format!("fixed of {size} bytes (uuid)"),
            Node::Duration { size } => format!("fixed of {size} bytes (duration)"),
            Node::Fixed { name, size } => format!("fixed {name} ({size} bytes)"),
            Node::Enum { name, .. } => format!("enum {name}"),
            Node::Array(item) => format!("array of {}", self.describe(*item)),
            Node::Map(values) => format!("map of {}", self.describe(*values)),
            Node::Union { branches, .. } => format!(
                "[{}]",
                branches
                    .iter()
                    .map(|b| self.describe(*b))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Node::Record(r) => format!("record {}", r.name),
            Node::Pending => "(a type being compiled)".into(),
        }
    }
}

/// No `Value::Fixed` in `v` says 12 bytes and holds fewer (apache-avro's
/// validation of a bare record panics on one where it tries a duration).
fn validates_safely(v: &Value) -> bool {
    match v {
        Value::Fixed(12, b) => b.len() >= 12,
        Value::Union(_, x) => validates_safely(x),
        Value::Array(items) => items.iter().all(validates_safely),
        Value::Map(entries) => entries.values().all(validates_safely),
        Value::Record(entries) => entries.iter().all(|(_, x)| validates_safely(x)),
        _ => true,
    }
}

/// The entry apache-avro writes field `f` from: the last one named as the
/// field, else the last one named as its first alias that has one.
fn source(f: &Field, entries: &[(String, Value)]) -> Option<usize> {
    let last = |name: &str| entries.iter().rposition(|(n, _)| n == name);
    last(&f.name).or_else(|| f.aliases.iter().find_map(|a| last(a)))
}

/// A zigzag varint, as Avro writes `int` and `long`.
#[inline]
fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Length-prefixed bytes, as Avro writes `bytes` and `string`.
#[inline]
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// A decimal's two's-complement big-endian bytes: as given for `bytes`,
/// sign-extended to the size for `fixed` (apache-avro's rules).
fn decimal(out: &mut Vec<u8>, d: &Decimal, fixed: Option<usize>) -> Step {
    // A `Decimal` keeps the bytes it was made from and gives them back
    // sign-extended to their own length, which fails only when there are
    // none (the value zero, which needs one byte).
    let own = Vec::<u8>::try_from(d);
    let Some(size) = fixed else {
        return match own {
            Ok(b) => {
                bytes(out, &b);
                Ok(())
            }
            Err(e) => refuse(format!("the decimal has no bytes: {e}")),
        };
    };
    let own = own.unwrap_or_default();
    let negative = own.first().is_some_and(|b| b & 0x80 != 0);
    // The shortest two's-complement form, at least one byte (what num-bigint
    // gives apache-avro), then sign-extended to the size.
    let mut short: &[u8] = if own.is_empty() { &[0] } else { &own };
    while short.len() > 1
        && ((short[0] == 0 && short[1] & 0x80 == 0) || (short[0] == 0xff && short[1] & 0x80 != 0))
    {
        short = &short[1..];
    }
    if short.len() > size {
        return refuse(format!(
            "the decimal needs {} bytes, the fixed holds {size}",
            short.len()
        ));
    }
    out.extend(std::iter::repeat_n(
        if negative { 0xff } else { 0 },
        size - short.len(),
    ));
    out.extend_from_slice(short);
    Ok(())
}

/// What kind of value `v` is, in words.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "a boolean",
        Value::Int(_) => "an int",
        Value::Long(_) => "a long",
        Value::Float(_) => "a float",
        Value::Double(_) => "a double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        Value::Fixed(..) => "a fixed value",
        Value::Enum(..) => "an enum value",
        Value::Union(..) => "a union value",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Record(_) => "a record",
        Value::Date(_) => "a date",
        Value::Decimal(_) => "a decimal",
        Value::BigDecimal(_) => "a big decimal",
        Value::TimeMillis(_) => "a time-millis",
        Value::TimeMicros(_) => "a time-micros",
        Value::TimestampMillis(_) => "a timestamp-millis",
        Value::TimestampMicros(_) => "a timestamp-micros",
        Value::TimestampNanos(_) => "a timestamp-nanos",
        Value::LocalTimestampMillis(_) => "a local-timestamp-millis",
        Value::LocalTimestampMicros(_) => "a local-timestamp-micros",
        Value::LocalTimestampNanos(_) => "a local-timestamp-nanos",
        Value::Duration(_) => "a duration",
        Value::Uuid(_) => "a UUID",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::AvroCodec;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::{Days, Duration, Millis, Months};
    use proptest::prelude::*;

    fn read(name: &str) -> String {
        let path = format!("{}/../schemas/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).expect("schema file")
    }

    const EVERYTHING: &str = r#"{"type": "record", "name": "Everything", "namespace": "test.ferry", "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string", "aliases": ["str"]},
        {"name": "n", "type": "null"},
        {"name": "every", "type": ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]},
        {"name": "address", "type": {"type": "record", "name": "Address", "fields": [
            {"name": "street", "type": "string"},
            {"name": "city", "type": "string"},
            {"name": "zip", "type": ["null", "string"], "default": null}]}},
        {"name": "previous", "type": ["null", "Address"], "default": null},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "people", "type": {"type": "array", "items": {"type": "record", "name": "Person", "fields": [
            {"name": "name", "type": "string"},
            {"name": "age", "type": ["null", "int"], "aliases": ["years"]}]}}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "extras", "type": {"type": "map", "values": ["null", "string", "Person"]}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "shade", "type": {"type": "enum", "name": "Shade", "symbols": ["LIGHT", "DARK"], "default": "LIGHT"}},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "money", "type": {"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 4}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "raw_id", "type": {"type": "fixed", "name": "RawId", "size": 16, "logicalType": "uuid"}},
        {"name": "bytes_id", "type": {"type": "bytes", "logicalType": "uuid"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "tsn", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
        {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "ltsu", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "ltsn", "type": {"type": "long", "logicalType": "local-timestamp-nanos"}},
        {"name": "wait", "type": {"type": "fixed", "name": "Wait", "size": 12, "logicalType": "duration"}},
        {"name": "bd", "type": {"type": "bytes", "logicalType": "big-decimal"}},
        {"name": "choice", "type": ["null", "Color", "Hash", "Address", "Person"]},
        {"name": "maybe", "type": {"type": "array", "items": ["null", "long", "Person", "Money"]}},
        {"name": "cost", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2}]}
    ]}"#;

    const LIST: &str = r#"{"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": "long"},
        {"name": "next", "type": ["null", "Node"], "default": null}]}"#;

    const NAMESPACES: &str = r#"{"type": "record", "name": "Outer", "namespace": "x.y", "fields": [
        {"name": "inner", "type": {"type": "record", "name": "Inner", "namespace": "p.q", "fields": [
            {"name": "v", "type": "int"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}}]}},
        {"name": "again", "type": "p.q.Inner"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["C"]}},
        {"name": "e2", "type": "E"},
        {"name": "e3", "type": "p.q.E"}]}"#;

    const ROOT_UNION: &str = r#"["null", "string", {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]},
        {"type": "record", "name": "S", "fields": [{"name": "a", "type": "string"}]}]"#;

    const ROOT_ARRAY: &str = r#"{"type": "array", "items": {"type": "map", "values": "int"}}"#;

    fn schemas() -> Vec<(&'static str, Schema)> {
        let parse = |text: &str| Schema::parse_str(text).expect("schema parses");
        vec![
            ("contact", parse(&read("contact.avsc"))),
            ("event_envelope", parse(&read("event_envelope.avsc"))),
            ("everything", parse(EVERYTHING)),
            ("list", parse(LIST)),
            ("namespaces", parse(NAMESPACES)),
            ("root union", parse(ROOT_UNION)),
            ("root array", parse(ROOT_ARRAY)),
            ("long", Schema::Long),
        ]
    }

    /// apache-avro's answer: the datum, or that it refuses the value.
    /// A panic (apache-avro has one on some bare records in unions) counts
    /// as a refusal.
    fn apache(schema: &Schema, v: &Value) -> Option<Vec<u8>> {
        let writer = GenericDatumWriter::builder(schema).build().expect("writer");
        let mut out = Vec::new();
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writer.write_value_ref(&mut out, v).is_ok()
        }));
        matches!(written, Ok(true)).then_some(out)
    }

    /// Ferry's answer, through the codec (framing stripped).
    fn ferry(codec: &AvroCodec, v: &Value) -> Result<Vec<u8>, (String, String)> {
        match codec.encode(v) {
            Ok(bytes) => Ok(bytes[5..].to_vec()),
            Err(crate::schema::CodecError::Mismatch { field, reason, .. }) => Err((field, reason)),
            Err(e) => panic!("not a mismatch: {e}"),
        }
    }

    #[derive(Debug, Default)]
    struct Tally {
        same: usize,
        refused: usize,
        written_wrong: usize,
        bare_records: usize,
    }

    /// Ferry writes what apache-avro writes, byte for byte, and refuses what
    /// it refuses; the only other outcome is a refusal of a value apache-avro
    /// would write as something else, which says so.
    fn agree(schema: &Schema, codec: &AvroCodec, v: &Value, tally: &mut Tally) {
        match (ferry(codec, v), apache(schema, v)) {
            (Ok(ours), Some(theirs)) => {
                assert_eq!(ours, theirs, "bytes differ for {v:?}");
                tally.same += 1;
            }
            (Err((field, _)), None) => {
                assert!(!field.is_empty(), "a refusal names the field: {v:?}");
                tally.refused += 1;
            }
            (Ok(_), None) => panic!("Ferry writes what apache-avro refuses: {v:?}"),
            (Err((field, reason)), Some(_)) => {
                assert!(
                    reason.contains(WRITTEN_WRONG),
                    "Ferry refuses what apache-avro writes, at `{field}`: {reason}; {v:?}"
                );
                tally.written_wrong += 1;
            }
        }
    }

    /// Values for a schema from a seed: mostly fitting, with `wild` percent of
    /// places given something else (a wrong type, a bare union value, a
    /// reordered, renamed, missing or extra field, an index past the end).
    struct Gen<'n> {
        state: u64,
        wild: u64,
        depth: usize,
        names: &'n HashMap<Name, &'n Schema>,
        bare_records: usize,
    }

    impl Gen<'_> {
        fn next(&mut self) -> u64 {
            // splitmix64
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }

        fn int(&mut self) -> i64 {
            match self.below(4) {
                0 => self.below(3) as i64 - 1,
                1 => (self.next() as i64) >> self.below(64),
                2 => [i64::MIN, i64::MAX, 63, 64, -64, -65, 8191, 8192][self.below(8)],
                _ => self.next() as i64,
            }
        }

        fn int32(&mut self) -> i32 {
            self.int() as i32
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        fn text(&mut self) -> String {
            const PARTS: [&str; 8] = ["a", "Zürich", "😀", " ", "RED", "x.y", "", "0123456789"];
            (0..self.below(5)).map(|_| PARTS[self.below(8)]).collect()
        }

        fn decimal(&mut self, max_len: usize) -> apache_avro::Decimal {
            let len = self.below(max_len + 1);
            let mut b = self.bytes(len);
            if let Some(first) = b.first_mut() {
                // Redundant sign bytes now and then, to exercise sign extension.
                if self.chance(30) {
                    *first = if self.chance(50) { 0 } else { 0xff };
                }
            }
            apache_avro::Decimal::from(b)
        }

        fn duration(&mut self) -> Duration {
            Duration::new(
                Months::new(self.next() as u32),
                Days::new(self.next() as u32),
                Millis::new(self.next() as u32),
            )
        }

        fn uuid(&mut self) -> uuid::Uuid {
            uuid::Uuid::from_u64_pair(self.next(), self.next())
        }

        /// Any value at all, shallow.
        fn any(&mut self) -> Value {
            self.depth += 1;
            let deep = self.depth > 3;
            let v = match self.below(28) {
                0 => Value::Null,
                1 => Value::Boolean(self.chance(50)),
                2 => Value::Int(self.int32()),
                3 => Value::Long(self.int()),
                4 => Value::Float(self.int() as f32),
                5 => Value::Double(self.int() as f64 / 3.0),
                6 => {
                    let len = [0, 4, 8, 12, 16, 3][self.below(6)];
                    Value::Bytes(self.bytes(len))
                }
                7 => {
                    if self.chance(30) {
                        Value::String(self.uuid().to_string())
                    } else {
                        Value::String(["RED", "LIGHT", "DARK", "C", "A"][self.below(5)].into())
                    }
                }
                8 => {
                    let n = [4, 8, 12, 16, 5][self.below(5)];
                    let len = if self.chance(85) { n } else { n + 1 };
                    Value::Fixed(n, self.bytes(len))
                }
                9 => {
                    let s = ["RED", "GREEN", "BLUE", "LIGHT", "DARK", "A", "X"][self.below(7)];
                    Value::Enum(self.below(4) as u32, s.into())
                }
                10 if !deep => Value::Union(self.below(6) as u32, Box::new(self.any())),
                11 if !deep => Value::Array((0..self.below(3)).map(|_| self.any()).collect()),
                12 if !deep => Value::Map(
                    (0..self.below(3))
                        .map(|i| (format!("k{i}"), self.any()))
                        .collect(),
                ),
                13 if !deep => {
                    let names = ["a", "street", "city", "name", "age", "v", "zip"];
                    Value::Record(
                        (0..self.below(4))
                            .map(|_| (names[self.below(7)].to_owned(), self.any()))
                            .collect(),
                    )
                }
                14 => Value::Date(self.int32()),
                15 => Value::Decimal(self.decimal(9)),
                16 => Value::BigDecimal(
                    format!("{}.{}", self.int32(), self.below(1000))
                        .parse()
                        .expect("decimal text"),
                ),
                17 => Value::TimeMillis(self.int32()),
                18 => Value::TimeMicros(self.int()),
                19 => Value::TimestampMillis(self.int()),
                20 => Value::TimestampMicros(self.int()),
                21 => Value::TimestampNanos(self.int()),
                22 => Value::LocalTimestampMillis(self.int()),
                23 => Value::LocalTimestampMicros(self.int()),
                24 => Value::LocalTimestampNanos(self.int()),
                25 => Value::Duration(self.duration()),
                26 => Value::Uuid(self.uuid()),
                _ => Value::String(self.text()),
            };
            self.depth -= 1;
            v
        }

        fn value(&mut self, schema: &Schema, ns: NamespaceRef<'_>) -> Value {
            if self.chance(self.wild) {
                return self.any();
            }
            self.depth += 1;
            let v = self.fitting(schema, ns);
            self.depth -= 1;
            v
        }

        fn fitting(&mut self, schema: &Schema, ns: NamespaceRef<'_>) -> Value {
            let deep = self.depth > 4;
            let either = |g: &mut Self, a: Value, b: Value| if g.chance(50) { a } else { b };
            match schema {
                Schema::Null => Value::Null,
                Schema::Boolean => Value::Boolean(self.chance(50)),
                Schema::Int => Value::Int(self.int32()),
                Schema::Long => {
                    let n = self.int32();
                    let l = self.int();
                    either(self, Value::Int(n), Value::Long(l))
                }
                Schema::Float => Value::Float(self.int() as f32 / 7.0),
                Schema::Double => Value::Double(self.int() as f64 / 7.0),
                Schema::Bytes => {
                    let len = self.below(20);
                    Value::Bytes(self.bytes(len))
                }
                Schema::String => Value::String(self.text()),
                Schema::Array(a) => {
                    let n = if deep { 0 } else { self.below(4) };
                    Value::Array((0..n).map(|_| self.value(&a.items, ns)).collect())
                }
                Schema::Map(m) => {
                    let n = if deep { 0 } else { self.below(4) };
                    Value::Map(
                        (0..n)
                            .map(|_| (self.text(), self.value(&m.types, ns)))
                            .collect(),
                    )
                }
                Schema::Union(u) => {
                    let branches = u.variants();
                    let null = branches.iter().position(|b| *b == Schema::Null);
                    let i = match null {
                        Some(n) if deep => n,
                        _ => self.below(branches.len()),
                    };
                    let x = self.value(&branches[i], ns);
                    let bare_ok = matches!(x, Value::Null | Value::Record(_));
                    if !self.chance(self.wild) {
                        // apache-avro resolves a bare record by field names:
                        // one that uses an alias fits no branch.
                        if bare_ok && !uses_alias(&x) && self.chance(20) {
                            self.bare_records += usize::from(matches!(x, Value::Record(_)));
                            x
                        } else {
                            Value::Union(i as u32, Box::new(x))
                        }
                    } else {
                        match self.below(3) {
                            0 => x,
                            1 => Value::Union(self.below(branches.len()) as u32, Box::new(x)),
                            _ => Value::Union(branches.len() as u32, Box::new(x)),
                        }
                    }
                }
                Schema::Record(r) => {
                    let inner = r.name.namespace().or(ns);
                    let mut entries: Vec<(String, Value)> = r
                        .fields
                        .iter()
                        .map(|f| {
                            let name = match f.aliases.first() {
                                Some(alias) if self.chance(10) => alias.clone(),
                                _ => f.name.clone(),
                            };
                            (name, self.value(&f.schema, inner))
                        })
                        .collect();
                    if self.chance(10) && entries.len() > 1 {
                        let (a, b) = (self.below(entries.len()), self.below(entries.len()));
                        entries.swap(a, b);
                    }
                    if self.chance(self.wild) && !entries.is_empty() {
                        let at = self.below(entries.len());
                        match self.below(3) {
                            0 => {
                                entries.remove(at);
                            }
                            1 => {
                                let again = entries[at].clone();
                                entries.push(again);
                            }
                            _ => entries.push(("zzz".into(), Value::Null)),
                        }
                    }
                    Value::Record(entries)
                }
                Schema::Enum(e) => {
                    let i = self.below(e.symbols.len());
                    let s = e.symbols[i].clone();
                    either(self, Value::Enum(i as u32, s.clone()), Value::String(s))
                }
                Schema::Fixed(f) => {
                    let b = self.bytes(f.size);
                    either(self, Value::Fixed(f.size, b.clone()), Value::Bytes(b))
                }
                Schema::Decimal(d) => match &d.inner {
                    InnerDecimalSchema::Bytes => {
                        // An empty decimal is refused by both.
                        let mut d = self.decimal(8);
                        while d == apache_avro::Decimal::from([0u8; 0]) {
                            d = self.decimal(8);
                        }
                        Value::Decimal(d)
                    }
                    InnerDecimalSchema::Fixed(f) => {
                        let b = self.bytes(f.size);
                        let dec = self.decimal(f.size);
                        either(self, Value::Decimal(dec), Value::Fixed(f.size, b))
                    }
                },
                Schema::BigDecimal => Value::BigDecimal(
                    format!("-{}.{:03}", self.below(1 << 20), self.below(1000))
                        .parse()
                        .expect("decimal text"),
                ),
                Schema::Uuid(kind) => {
                    let u = self.uuid();
                    let other = match kind {
                        UuidSchema::String => Value::String(u.hyphenated().to_string()),
                        UuidSchema::Bytes => Value::Bytes(u.as_bytes().to_vec()),
                        UuidSchema::Fixed(_) => Value::Fixed(16, u.as_bytes().to_vec()),
                    };
                    either(self, Value::Uuid(u), other)
                }
                Schema::Date => {
                    let n = self.int32();
                    either(self, Value::Date(n), Value::Int(n))
                }
                Schema::TimeMillis => {
                    let n = self.int32();
                    either(self, Value::TimeMillis(n), Value::Int(n))
                }
                Schema::TimeMicros => {
                    let n = self.int();
                    either(self, Value::TimeMicros(n), Value::Long(n))
                }
                Schema::TimestampMillis => {
                    let n = self.int();
                    either(self, Value::TimestampMillis(n), Value::Long(n))
                }
                Schema::TimestampMicros => {
                    let n = self.int();
                    either(self, Value::TimestampMicros(n), Value::Long(n))
                }
                Schema::TimestampNanos => Value::TimestampNanos(self.int()),
                Schema::LocalTimestampMillis => {
                    let n = self.int();
                    either(self, Value::LocalTimestampMillis(n), Value::Long(n))
                }
                Schema::LocalTimestampMicros => {
                    let n = self.int();
                    either(self, Value::LocalTimestampMicros(n), Value::Long(n))
                }
                Schema::LocalTimestampNanos => Value::LocalTimestampNanos(self.int()),
                Schema::Duration(_) => {
                    let d = self.duration();
                    let b = self.bytes(12);
                    either(self, Value::Duration(d), Value::Fixed(12, b))
                }
                Schema::Ref { name } => {
                    let full = name.fully_qualified_name(ns);
                    let target = *self.names.get(full.as_ref()).expect("known name");
                    self.fitting(target, full.namespace())
                }
            }
        }
    }

    fn uses_alias(v: &Value) -> bool {
        match v {
            Value::Record(entries) => entries
                .iter()
                .any(|(n, x)| n == "years" || n == "str" || uses_alias(x)),
            Value::Union(_, x) => uses_alias(x),
            Value::Array(items) => items.iter().any(uses_alias),
            Value::Map(entries) => entries.values().any(uses_alias),
            _ => false,
        }
    }

    fn run(seed: u64, wild: u64, tally: &mut Tally) {
        for (_, schema) in schemas() {
            let resolved = ResolvedSchema::try_from(&schema).expect("resolves");
            let codec = AvroCodec::new(schema.clone(), 1).expect("codec");
            let mut g = Gen {
                state: seed,
                wild,
                depth: 0,
                names: resolved.get_names(),
                bare_records: 0,
            };
            for _ in 0..4 {
                let v = g.value(&schema, None);
                agree(&schema, &codec, &v, tally);
            }
            tally.bare_records += g.bare_records;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Fitting values: apache-avro's bytes exactly, for every schema.
        #[test]
        fn fitting_values_are_written_as_apache_avro_writes_them(seed in any::<u64>()) {
            let mut tally = Tally::default();
            run(seed, 0, &mut tally);
            prop_assert_eq!(tally.refused + tally.written_wrong, 0, "{:?}", tally);
        }

        /// Anything: the same bytes, or refused by both, or refused because
        /// apache-avro would write it as something else.
        #[test]
        fn other_values_are_refused_as_apache_avro_refuses_them(seed in any::<u64>(), wild in 1..40u64) {
            run(seed, wild, &mut Tally::default());
        }
    }

    /// The generator reaches every outcome (so the properties above mean
    /// something).
    #[test]
    fn generated_values_reach_every_outcome() {
        let mut tally = Tally::default();
        for seed in 0..300 {
            run(seed, 15, &mut tally);
        }
        assert!(tally.same > 1000, "{tally:?}");
        assert!(tally.refused > 500, "{tally:?}");
        assert!(tally.written_wrong > 20, "{tally:?}");
        assert!(tally.bare_records > 100, "{tally:?}");
    }

    fn codec_for(text: &str) -> (Schema, AvroCodec) {
        let schema = Schema::parse_str(text).expect("parses");
        (schema.clone(), AvroCodec::new(schema, 1).expect("codec"))
    }

    fn record(fields: Vec<(&str, Value)>) -> Value {
        Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn union(i: u32, v: Value) -> Value {
        Value::Union(i, Box::new(v))
    }

    fn s(text: &str) -> Value {
        Value::String(text.into())
    }

    const NESTED: &str = r#"{"type": "record", "name": "Customer", "fields": [
        {"name": "address", "type": {"type": "record", "name": "Address", "fields": [
            {"name": "street", "type": "string"}, {"name": "city", "type": "string"}]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attributes", "type": {"type": "map", "values": "long"}},
        {"name": "nick", "type": ["null", "string", "long"]},
        {"name": "level", "type": {"type": "enum", "name": "Level", "symbols": ["LOW", "HIGH"], "default": "LOW"}},
        {"name": "score", "type": "double"}]}"#;

    fn customer(
        city: Value,
        tags: Vec<Value>,
        attribute: Value,
        nick: Value,
        level: Value,
        score: Value,
    ) -> Value {
        record(vec![
            (
                "address",
                record(vec![("street", s("1 Main St")), ("city", city)]),
            ),
            ("tags", Value::Array(tags)),
            (
                "attributes",
                Value::Map([("visits".to_owned(), attribute)].into()),
            ),
            ("nick", nick),
            ("level", level),
            ("score", score),
        ])
    }

    fn good() -> [Value; 6] {
        [
            s("Paris"),
            Value::Array(vec![s("a"), s("b"), s("c")]),
            Value::Long(3),
            union(1, s("ada")),
            Value::Enum(1, "HIGH".into()),
            Value::Double(1.5),
        ]
    }

    fn with(slot: usize, v: Value) -> Value {
        let mut parts = good();
        parts[slot] = v;
        let [city, tags, attribute, nick, level, score] = parts;
        let Value::Array(tags) = tags else {
            unreachable!()
        };
        customer(city, tags, attribute, nick, level, score)
    }

    fn refusal(codec: &AvroCodec, v: &Value) -> (String, String) {
        ferry(codec, v).expect_err("refused")
    }

    #[test]
    fn a_refusal_names_the_path_to_the_field() {
        let (schema, codec) = codec_for(NESTED);
        let fine = with(0, s("Paris"));
        assert_eq!(ferry(&codec, &fine).ok(), apache(&schema, &fine));
        let cases = [
            (
                with(0, Value::Int(7)),
                "address.city",
                "an int does not fit string",
            ),
            (
                with(1, Value::Array(vec![s("a"), s("b"), Value::Null])),
                "tags[2]",
                "null does not fit string",
            ),
            (
                with(2, s("x")),
                "attributes[\"visits\"]",
                "a string does not fit long",
            ),
            (
                with(3, union(2, s("ada"))),
                "nick",
                "union branch 2: a string does not fit long",
            ),
            (
                with(3, union(3, s("ada"))),
                "nick",
                "union index 3 is past the 3 branches",
            ),
            (
                with(4, s("MEDIUM")),
                "level",
                "\"MEDIUM\" is not a symbol of enum Level",
            ),
        ];
        for (v, field, reason) in cases {
            assert_eq!(apache(&schema, &v), None, "apache-avro refuses {v:?}");
            let (f, r) = refusal(&codec, &v);
            assert_eq!(f, field);
            assert!(r.starts_with(reason), "{r}");
        }
    }

    #[test]
    fn missing_unknown_and_repeated_fields_are_refused() {
        let (schema, codec) = codec_for(NESTED);
        let Value::Record(mut fields) = with(0, s("Paris")) else {
            unreachable!()
        };
        fields.swap(0, 5);
        let reordered = Value::Record(fields.clone());
        // apache-avro finds fields by name: order does not matter.
        assert_eq!(ferry(&codec, &reordered).ok(), apache(&schema, &reordered));
        assert!(apache(&schema, &reordered).is_some());

        let mut missing = fields.clone();
        missing.retain(|(n, _)| n != "nick");
        let missing = Value::Record(missing);
        assert_eq!(apache(&schema, &missing), None);
        assert_eq!(refusal(&codec, &missing), ("nick".into(), "missing".into()));

        let mut extra = fields.clone();
        extra.push(("zip".into(), s("75001")));
        let extra = Value::Record(extra);
        assert_eq!(apache(&schema, &extra), None);
        assert_eq!(
            refusal(&codec, &extra),
            ("zip".into(), "not in the schema".into())
        );

        let mut twice = fields;
        twice.push(("score".into(), Value::Double(2.0)));
        let twice = Value::Record(twice);
        assert_eq!(apache(&schema, &twice), None);
        let (field, reason) = refusal(&codec, &twice);
        assert_eq!(field, "score");
        assert!(reason.starts_with("given more than once"), "{reason}");
    }

    #[test]
    fn apache_avro_promotions_are_accepted_with_its_bytes() {
        let (schema, codec) = codec_for(NESTED);
        for v in [
            with(2, Value::Int(3)), // int for long
            with(4, s("HIGH")),     // symbol for enum
            with(3, Value::Null),   // bare null: nick has a null branch
            with(3, union(0, Value::Null)),
        ] {
            let theirs = apache(&schema, &v).expect("apache-avro writes it");
            assert_eq!(ferry(&codec, &v).expect("Ferry writes it"), theirs);
        }
    }

    /// What apache-avro accepts but writes so that no reader gets the value
    /// back: Ferry refuses it and says why.
    #[test]
    fn values_apache_avro_would_write_as_something_else_are_refused() {
        let (schema, codec) = codec_for(NESTED);
        let reader = GenericDatumReader::builder(&schema)
            .build()
            .expect("reader");
        for (v, field) in [
            (with(3, Value::Long(9)), "nick"),     // bare long for a union
            (with(5, Value::Float(1.5)), "score"), // float for double
            (with(4, Value::Enum(5, "X".into())), "level"), // index past the symbols
        ] {
            let theirs = apache(&schema, &v).expect("apache-avro writes it");
            let back = reader.read_value(&mut theirs.as_slice());
            assert!(
                back.as_ref().map_or(true, |b| *b != v),
                "{v:?} read back as {back:?}"
            );
            let (f, reason) = refusal(&codec, &v);
            assert_eq!(f, field);
            assert!(reason.contains(WRITTEN_WRONG), "{reason}");
        }
        // A bare string for a union: apache-avro refuses it too.
        let v = with(3, s("ada"));
        assert_eq!(apache(&schema, &v), None);
        assert_eq!(refusal(&codec, &v).0, "nick");
    }

    #[test]
    fn a_uuid_string_field_takes_only_uuids() {
        let (schema, codec) = codec_for(
            r#"{"type": "record", "name": "R", "fields": [{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}]}"#,
        );
        let id = |v: &str| Value::Record(vec![("id".into(), s(v))]);
        let v = id("67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(ferry(&codec, &v).ok(), apache(&schema, &v));
        // apache-avro writes any string of 32 bytes or more; a reader that
        // parses the field (Java's `UUID.fromString`) then fails on it.
        for not_rfc in [
            "this is not a uuid, but it is long enough",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            let v = id(not_rfc);
            assert!(apache(&schema, &v).is_some(), "{not_rfc}");
            let (field, reason) = refusal(&codec, &v);
            assert_eq!(field, "id");
            assert!(reason.contains("not a UUID"), "{reason}");
        }
    }

    #[test]
    fn a_bare_record_in_a_union_is_written_as_apache_avro_writes_it() {
        let (schema, codec) = codec_for(ROOT_UNION);
        let fits_s = record(vec![("a", s("text"))]);
        let theirs = apache(&schema, &fits_s).expect("apache-avro finds branch S");
        assert_eq!(theirs[0], 6, "branch 3, zigzag");
        assert_eq!(ferry(&codec, &fits_s), Ok(theirs));

        let fits_none = record(vec![("a", Value::Boolean(true))]);
        assert_eq!(apache(&schema, &fits_none), None);
        let (field, reason) = refusal(&codec, &fits_none);
        assert_eq!(field, "a");
        assert!(reason.contains("branch 2, record R"), "{reason}");

        let fits_no_branch = record(vec![("b", s("text"))]);
        assert_eq!(apache(&schema, &fits_no_branch), None);
        let (field, reason) = refusal(&codec, &fits_no_branch);
        assert_eq!(field, ".");
        assert!(reason.contains("fits none of the branches"), "{reason}");
    }

    #[test]
    fn a_misfit_in_or_beside_a_bare_record_is_named() {
        let (schema, codec) = codec_for(EVERYTHING);
        let resolved = ResolvedSchema::try_from(&schema).expect("resolves");
        let mut g = Gen {
            state: 1,
            wild: 0,
            depth: 0,
            names: resolved.get_names(),
            bare_records: 0,
        };
        let Value::Record(mut fields) = g.value(&schema, None) else {
            unreachable!()
        };
        let set = |fields: &mut Vec<(String, Value)>, name: &str, v: Value| {
            if let Some(slot) = fields.iter_mut().find(|(n, _)| n == name) {
                slot.1 = v;
            }
        };
        let address = |city: Value| {
            record(vec![
                ("street", s("x")),
                ("city", city),
                ("zip", Value::Null),
            ])
        };
        set(&mut fields, "s", s("fine"));
        set(&mut fields, "choice", address(s("y")));
        let v = Value::Record(fields.clone());
        let theirs = apache(&schema, &v).expect("apache-avro writes it");
        assert_eq!(ferry(&codec, &v), Ok(theirs));

        set(&mut fields, "tags", Value::Array(vec![Value::Int(1)]));
        let v = Value::Record(fields.clone());
        assert_eq!(apache(&schema, &v), None);
        assert_eq!(refusal(&codec, &v).0, "tags[0]");

        set(&mut fields, "tags", Value::Array(vec![]));
        set(&mut fields, "choice", address(Value::Int(3)));
        let v = Value::Record(fields);
        let (field, reason) = refusal(&codec, &v);
        assert_eq!(field, "choice.city");
        // apache-avro validates it (an int fits none of the branches by
        // resolution, so it refuses it) or would write it as Address.
        assert!(
            reason.contains("branch 3, record test.ferry.Address"),
            "{reason}"
        );
    }

    #[test]
    fn a_union_index_past_the_branches_inside_a_bare_record_is_refused() {
        // apache-avro panics on this one ("Invalid Union validation occurred").
        let (_, codec) = codec_for(LIST);
        let inner = record(vec![
            ("value", Value::Long(-1)),
            (
                "next",
                union(
                    2,
                    record(vec![
                        ("value", Value::Int(0)),
                        ("next", union(0, Value::Null)),
                    ]),
                ),
            ),
        ]);
        let v = record(vec![("value", Value::Long(0)), ("next", inner)]);
        let (field, reason) = refusal(&codec, &v);
        assert_eq!(field, "next.next");
        assert!(
            reason.contains("union index 2 is past the 2 branches"),
            "{reason}"
        );
    }

    #[test]
    fn recursive_and_namespaced_types_resolve() {
        let (schema, codec) = codec_for(LIST);
        let mut v = record(vec![
            ("value", Value::Long(0)),
            ("next", union(0, Value::Null)),
        ]);
        for i in 1..50 {
            v = record(vec![("value", Value::Long(i)), ("next", union(1, v))]);
        }
        assert_eq!(ferry(&codec, &v).ok(), apache(&schema, &v));

        let (schema, codec) = codec_for(NAMESPACES);
        let inner = |e: &str| record(vec![("v", Value::Int(1)), ("e", s(e))]);
        let v = record(vec![
            ("inner", inner("B")),
            ("again", inner("A")),
            ("e", s("C")),
            ("e2", s("C")),
            ("e3", s("A")),
        ]);
        assert!(apache(&schema, &v).is_some());
        assert_eq!(ferry(&codec, &v).ok(), apache(&schema, &v));
        let wrong = record(vec![
            ("inner", inner("B")),
            ("again", inner("A")),
            ("e", s("C")),
            ("e2", s("A")),
            ("e3", s("A")),
        ]);
        assert_eq!(apache(&schema, &wrong), None);
        assert_eq!(refusal(&codec, &wrong).0, "e2");
    }
}
