//! [`Mapping`]: a [`MappingConfig`] compiled against its target schema into
//! a tree of nodes, one per target field, each knowing where its value comes
//! from, which normalizers run on it, how to build its Avro value and what a
//! missing value becomes. Everything that can be checked without a record
//! is checked here, once; applying a mapping only reads paths, runs the
//! compiled steps and builds values.

use super::config::{FieldRule, MappingConfig, NameConfig, PathList, RuleConfig};
use super::error::{MappingConfigError, MappingError, Rule};
use super::normalize::{name::person_name, Step};
use super::path::Path;
use super::shape::{Shape, ShapeId, Shapes, Slot};
use super::value::{is_blank, Kind, Val};
use super::Transform;
use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// A compiled mapping from JSON payloads to records of one Avro schema.
/// Cheap to share (`Arc<dyn Transform>`); `apply` takes `&self`.
#[derive(Debug, Clone)]
pub struct Mapping {
    schema: Schema,
    shapes: Shapes,
    root: Node,
}

#[derive(Debug, Clone)]
struct Node {
    source: Source,
    steps: Vec<Step>,
    build: Build,
    missing: Missing,
}

#[derive(Debug, Clone)]
enum Source {
    /// The first of these with a non-blank value.
    Paths(Vec<Path>),
    Name(Box<NameSource>),
    /// The value in hand: the item inside `each`, the enclosing value for
    /// `fields` without `from`.
    Current,
    Const(Value),
    Raw {
        slot: Slot,
        text: bool,
    },
}

#[derive(Debug, Clone)]
struct NameSource {
    full: Vec<Path>,
    /// First, middle, last.
    parts: [Vec<Path>; 3],
}

#[derive(Debug, Clone)]
enum Build {
    /// Convert the value to the type.
    Value(ShapeId),
    /// A record from nested rules, read relative to the value.
    Record {
        slot: Slot,
        fields: Vec<(String, Node)>,
    },
    /// An array (or map) with a rule per item (or value).
    Items {
        slot: Slot,
        item: Box<Node>,
        map: bool,
    },
}

#[derive(Debug, Clone)]
enum Missing {
    Use(Value),
    Fail,
}

impl Mapping {
    /// Compiles `config` for records of `schema` (a record schema). No I/O.
    /// Refuses, naming the field and the rule: a rule for a field the schema
    /// lacks; a schema field with no rule, default or null to fall back on;
    /// paths that do not parse; normalizer options that are wrong (unknown
    /// phone regions, bad time patterns, empty tables); a normalizer chain
    /// whose output cannot fit the field (`email` into a `long`); constants,
    /// defaults and `map` outputs that do not fit the field.
    pub fn compile(config: &MappingConfig, schema: &Schema) -> Result<Self, MappingConfigError> {
        let (shapes, root) =
            Shapes::build(schema).map_err(|e| MappingConfigError::new("", "schema", e))?;
        if !matches!(shapes.get(root), Shape::Record(_)) {
            return Err(MappingConfigError::new(
                "",
                "schema",
                format!(
                    "the target schema must be a record, not {}",
                    shapes.describe(root)
                ),
            ));
        }
        let compiler = Compiler { shapes: &shapes };
        let fields = compiler.fields(root, &config.fields, "")?;
        let root = Node {
            source: Source::Current,
            steps: Vec::new(),
            build: Build::Record {
                slot: Slot {
                    wrap: None,
                    id: root,
                },
                fields,
            },
            missing: Missing::Fail,
        };
        Ok(Self {
            schema: schema.clone(),
            shapes,
            root,
        })
    }

    /// The record for `payload` (whose bytes as received are `raw`).
    pub fn apply(&self, raw: &[u8], payload: &Json) -> Result<Value, MappingError> {
        self.eval(&self.root, payload, raw)
    }

    /// The target schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// A record of this mapping's schema as plain JSON, for diffs in tests
    /// and `ferry test` (see [`crate::schema::json::to_json`]).
    pub fn to_json(&self, value: &Value) -> Json {
        crate::schema::json::to_json(&self.schema, value)
    }

    fn eval<'a>(
        &'a self,
        node: &'a Node,
        here: &'a Json,
        raw: &[u8],
    ) -> Result<Value, MappingError> {
        let (mut val, at): (Option<Val<'a>>, &'a str) = match &node.source {
            Source::Const(v) => return Ok(v.clone()),
            Source::Raw { slot, text } => return raw_value(raw, *slot, *text),
            Source::Current => ((!is_blank(here)).then_some(Val::Json(here)), ""),
            Source::Paths(paths) => match first_present(paths, here) {
                Some((v, p)) => (Some(Val::Json(v)), p.pointer()),
                None => (None, ""),
            },
            Source::Name(name) => (name_value(name, here)?, ""),
        };
        for step in &node.steps {
            let Some(v) = val else { break };
            val = step
                .apply(v)
                .map_err(|reason| MappingError::new(step.rule(), reason).read_at(at))?;
        }
        let Some(v) = val else {
            return match &node.missing {
                Missing::Use(v) => Ok(v.clone()),
                Missing::Fail => Err(MappingError::new(
                    Rule::Required,
                    "missing, and the field has no default",
                )
                .tried(tried(&node.source))),
            };
        };
        match &node.build {
            Build::Value(id) => self.shapes.convert(*id, v).map_err(|e| e.read_at(at)),
            Build::Record { slot, fields } => {
                let Val::Json(inner @ Json::Object(_)) = v else {
                    return Err(type_error(&self.shapes, slot.id, &v).read_at(at));
                };
                let mut out = Vec::with_capacity(fields.len());
                for (name, child) in fields {
                    let value = self
                        .eval(child, inner, raw)
                        .map_err(|e| e.under(at).in_field(name))?;
                    out.push((name.clone(), value));
                }
                Ok(slot.wrap(Value::Record(out)))
            }
            Build::Items { slot, item, map } => match (v, map) {
                (Val::Json(Json::Array(items)), false) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, x) in items.iter().enumerate() {
                        out.push(
                            self.eval(item, x, raw)
                                .map_err(|e| e.in_item(&i).under(at))?,
                        );
                    }
                    Ok(slot.wrap(Value::Array(out)))
                }
                (Val::Json(Json::Object(entries)), true) => {
                    let mut out = HashMap::with_capacity(entries.len());
                    for (k, x) in entries {
                        let value = self
                            .eval(item, x, raw)
                            .map_err(|e| e.in_item(k).under(at))?;
                        out.insert(k.clone(), value);
                    }
                    Ok(slot.wrap(Value::Map(out)))
                }
                (v, _) => Err(type_error(&self.shapes, slot.id, &v).read_at(at)),
            },
        }
    }
}

impl Transform for Mapping {
    fn apply(&self, raw: &[u8], payload: &Json) -> Result<Value, MappingError> {
        Mapping::apply(self, raw, payload)
    }
}

fn first_present<'a, 'p>(paths: &'p [Path], here: &'a Json) -> Option<(&'a Json, &'p Path)> {
    paths
        .iter()
        .find_map(|p| p.get(here).filter(|v| !is_blank(v)).map(|v| (v, p)))
}

/// Every location a missing value was looked for, for the error.
fn tried(source: &Source) -> Vec<String> {
    let pointers =
        |paths: &mut dyn Iterator<Item = &Path>| paths.map(|p| p.pointer().to_owned()).collect();
    match source {
        Source::Paths(p) => pointers(&mut p.iter()),
        Source::Name(n) => pointers(&mut n.full.iter().chain(n.parts.iter().flatten())),
        _ => Vec::new(),
    }
}

fn name_value<'a>(name: &NameSource, here: &'a Json) -> Result<Option<Val<'a>>, MappingError> {
    let part = |paths: &[Path]| -> Result<Option<Cow<'a, str>>, MappingError> {
        let Some((v, p)) = first_present(paths, here) else {
            return Ok(None);
        };
        Val::Json(v).into_text().map(Some).map_err(|v| {
            MappingError::new(
                Rule::Name,
                format!("expected text for a name, found {}", v.describe()),
            )
            .read_at(p.pointer())
        })
    };
    let full = part(&name.full)?;
    let [first, middle, last] = &name.parts;
    let (first, middle, last) = (part(first)?, part(middle)?, part(last)?);
    let joined = person_name(
        full.as_deref(),
        &[first.as_deref(), middle.as_deref(), last.as_deref()],
    );
    Ok(joined.map(|n| Val::Text(Cow::Owned(n.into_owned()))))
}

fn raw_value(raw: &[u8], slot: Slot, text: bool) -> Result<Value, MappingError> {
    let v = if text {
        Value::String(
            String::from_utf8(raw.to_vec())
                .map_err(|_| MappingError::new(Rule::Raw, "the payload is not UTF-8 text"))?,
        )
    } else {
        Value::Bytes(raw.to_vec())
    };
    Ok(slot.wrap(v))
}

/// A record built from a non-object, or items from a non-array.
fn type_error(shapes: &Shapes, id: ShapeId, v: &Val<'_>) -> MappingError {
    let want = match shapes.get(id) {
        Shape::Array(_) => "an array",
        _ => "an object",
    };
    MappingError::new(
        Rule::Type,
        format!(
            "expected {want} for {}, found {}",
            shapes.describe(id),
            v.describe()
        ),
    )
}

struct Compiler<'s> {
    shapes: &'s Shapes,
}

fn label(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

impl Compiler<'_> {
    /// The nodes of record `id`'s fields, from `rules` (by field name).
    fn fields(
        &self,
        id: ShapeId,
        rules: &BTreeMap<String, FieldRule>,
        prefix: &str,
    ) -> Result<Vec<(String, Node)>, MappingConfigError> {
        let Shape::Record(record) = self.shapes.get(id) else {
            return Err(MappingConfigError::new(prefix, "fields", "not a record"));
        };
        if let Some(unknown) = rules
            .keys()
            .find(|k| !record.fields.iter().any(|f| &f.name == *k))
        {
            let known: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(MappingConfigError::new(
                &label(prefix, unknown),
                "fields",
                format!(
                    "record `{}` has no such field (it has: {})",
                    record.name,
                    known.join(", ")
                ),
            ));
        }
        let mut nodes = Vec::with_capacity(record.fields.len());
        for f in &record.fields {
            let field = label(prefix, &f.name);
            let node = match rules.get(&f.name) {
                Some(FieldRule::Raw) => self.raw(f.shape, &field)?,
                Some(FieldRule::Rule(rule)) => {
                    self.rule(rule, f.shape, &field, false, f.default.as_ref())?
                }
                None => {
                    let fallback = f
                        .default
                        .clone()
                        .or_else(|| self.shapes.null_value(f.shape));
                    let Some(v) = fallback else {
                        return Err(unmapped(&field, &self.shapes.describe(f.shape)));
                    };
                    constant(v)
                }
            };
            nodes.push((f.name.clone(), node));
        }
        Ok(nodes)
    }

    fn raw(&self, id: ShapeId, field: &str) -> Result<Node, MappingConfigError> {
        let slot = self.shapes.raw_slot(id).ok_or_else(|| {
            MappingConfigError::new(
                field,
                "raw",
                format!(
                    "the original payload goes in a bytes or string field, not {}",
                    self.shapes.describe(id)
                ),
            )
        })?;
        let text = matches!(self.shapes.get(slot.id), Shape::String);
        Ok(Node {
            source: Source::Raw { slot, text },
            steps: Vec::new(),
            build: Build::Value(id),
            missing: Missing::Fail,
        })
    }

    fn rule(
        &self,
        rule: &RuleConfig,
        id: ShapeId,
        field: &str,
        item: bool,
        schema_default: Option<&Value>,
    ) -> Result<Node, MappingConfigError> {
        let err = |key: &str, reason: String| MappingConfigError::new(field, key, reason);
        let given = [
            rule.from.is_some(),
            rule.constant.is_some(),
            rule.name.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(err(
                "from",
                "give one of `from`, `const` and `name`, not several".into(),
            ));
        }
        if rule.fields.is_some() && rule.each.is_some() {
            return Err(err("fields", "give `fields` or `each`, not both".into()));
        }
        if let Some(c) = &rule.constant {
            if !rule.normalize.0.is_empty()
                || rule.default.is_some()
                || rule.required
                || rule.fields.is_some()
                || rule.each.is_some()
            {
                return Err(err(
                    "const",
                    "`const` stands alone (no `normalize`, `default`, `required`, `fields` or `each`)"
                        .into(),
                ));
            }
            let v = self
                .shapes
                .convert(id, Val::Json(c))
                .map_err(|e| err("const", format!("does not fit the field: {}", e.reason)))?;
            return Ok(constant(v));
        }
        let source = match (&rule.from, &rule.name) {
            (Some(from), _) => Source::Paths(paths(from).map_err(|e| err("from", e))?),
            (None, Some(name)) => {
                Source::Name(Box::new(name_source(name).map_err(|e| err("name", e))?))
            }
            (None, None) if item || rule.fields.is_some() => Source::Current,
            (None, None) => return Err(err(
                "from",
                "says nowhere where the value comes from: give `from`, `const`, `name` or `fields`"
                    .into(),
            )),
        };
        let missing = self.missing(rule, id, field, schema_default)?;
        let structured = rule.fields.is_some() || rule.each.is_some();
        if structured && !rule.normalize.0.is_empty() {
            return Err(err(
                "normalize",
                "normalizers apply to values: put them on the nested rules".into(),
            ));
        }
        if structured && matches!(source, Source::Name(_)) {
            return Err(err("name", "a name is text, not a record or a list".into()));
        }
        if let Some(rules) = &rule.fields {
            let slot = self.shapes.record_slot(id).ok_or_else(|| {
                err(
                    "fields",
                    format!(
                        "`fields` builds a record; this field is {}",
                        self.shapes.describe(id)
                    ),
                )
            })?;
            let fields = self.fields(slot.id, rules, field)?;
            return Ok(Node {
                source,
                steps: Vec::new(),
                build: Build::Record { slot, fields },
                missing,
            });
        }
        if let Some(each) = &rule.each {
            let slot = self.shapes.items_slot(id).ok_or_else(|| {
                err(
                    "each",
                    format!(
                        "`each` builds an array or map; this field is {}",
                        self.shapes.describe(id)
                    ),
                )
            })?;
            let (item_id, map) = match self.shapes.get(slot.id) {
                Shape::Array(i) => (*i, false),
                Shape::Map(i) => (*i, true),
                _ => return Err(err("each", "not an array or map".into())),
            };
            let item = self.rule(each, item_id, &format!("{field}[]"), true, None)?;
            return Ok(Node {
                source,
                steps: Vec::new(),
                build: Build::Items {
                    slot,
                    item: Box::new(item),
                    map,
                },
                missing,
            });
        }
        let steps = self.steps(rule, &source, id, field)?;
        Ok(Node {
            source,
            steps,
            build: Build::Value(id),
            missing,
        })
    }

    /// The normalizers, checked as a chain and against the field's type.
    fn steps(
        &self,
        rule: &RuleConfig,
        source: &Source,
        id: ShapeId,
        field: &str,
    ) -> Result<Vec<Step>, MappingConfigError> {
        let mut kind = if matches!(source, Source::Name(_)) {
            Kind::Text
        } else {
            Kind::Any
        };
        let mut steps = Vec::with_capacity(rule.normalize.0.len());
        for config in &rule.normalize.0 {
            let step = Step::compile(config)
                .map_err(|e| MappingConfigError::new(field, "normalize", e))?;
            let key = format!("normalize {}", step.rule());
            kind = step
                .output(kind)
                .map_err(|e| MappingConfigError::new(field, &key, e))?;
            steps.push(step);
        }
        let key = steps
            .last()
            .map_or_else(|| "from".to_owned(), |s| format!("normalize {}", s.rule()));
        if !self.shapes.accepts(id, kind) {
            return Err(MappingConfigError::new(
                field,
                key,
                format!(
                    "yields {}, which a field of type {} cannot hold",
                    kind.describe(),
                    self.shapes.describe(id)
                ),
            ));
        }
        if let Some(Step::Map(table)) = steps.last() {
            for (input, output) in table.outputs() {
                self.shapes.convert(id, output).map_err(|e| {
                    MappingConfigError::new(
                        field,
                        &key,
                        format!(
                            "the output for `{input}` does not fit the field: {}",
                            e.reason
                        ),
                    )
                })?;
            }
        }
        Ok(steps)
    }

    /// What a missing value becomes: `default`, the schema's default, null,
    /// or a failure.
    fn missing(
        &self,
        rule: &RuleConfig,
        id: ShapeId,
        field: &str,
        schema_default: Option<&Value>,
    ) -> Result<Missing, MappingConfigError> {
        if rule.required {
            if rule.default.is_some() {
                return Err(MappingConfigError::new(
                    field,
                    "required",
                    "a field with a `default` is never missing; drop one of them",
                ));
            }
            return Ok(Missing::Fail);
        }
        if let Some(d) = &rule.default {
            return self
                .shapes
                .convert(id, Val::Json(d))
                .map(Missing::Use)
                .map_err(|e| {
                    MappingConfigError::new(
                        field,
                        "default",
                        format!("does not fit the field: {}", e.reason),
                    )
                });
        }
        Ok(schema_default
            .cloned()
            .or_else(|| self.shapes.null_value(id))
            .map_or(Missing::Fail, Missing::Use))
    }
}

fn unmapped(field: &str, kind: &str) -> MappingConfigError {
    MappingConfigError::new(
        field,
        "required",
        format!(
            "the schema requires this {kind} field (no default, not nullable) and the mapping has no rule for it"
        ),
    )
}

fn constant(v: Value) -> Node {
    Node {
        source: Source::Const(v),
        steps: Vec::new(),
        build: Build::Value(0),
        missing: Missing::Fail,
    }
}

fn paths(list: &PathList) -> Result<Vec<Path>, String> {
    list.0.iter().map(|p| Path::parse(p)).collect()
}

fn name_source(name: &NameConfig) -> Result<NameSource, String> {
    let opt = |p: &Option<PathList>| p.as_ref().map_or(Ok(Vec::new()), paths);
    let source = NameSource {
        full: opt(&name.full)?,
        parts: [opt(&name.first)?, opt(&name.middle)?, opt(&name.last)?],
    };
    if source.full.is_empty() && source.parts.iter().all(Vec::is_empty) {
        return Err("give at least one of `first`, `middle`, `last` and `full`".into());
    }
    Ok(source)
}
