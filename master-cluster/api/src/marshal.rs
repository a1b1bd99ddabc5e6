//! xml_marshaller, the encoding of structured values in the SLAP HTTP protocol: what
//! `slapos.core` sends in form fields and expects in answers (`../shared/slap-protocol.md`).
//!
//! ```xml
//! <marshal><dictionary id="i2"><string>key</string><list id="i3"><int>1</int></list></dictionary></marshal>
//! ```
//!
//! [`encode`] writes what Python's `xml_marshaller.dumps` writes, byte for byte for strings,
//! integers, booleans, `None` and containers: dictionary keys sorted, ids from `i2` in document
//! order, strings escaped twice (`<` is `&amp;lt;`) and non-ASCII characters as character
//! references. [`decode`] is strict: a real XML parser (quick-xml), one value under
//! `<marshal>`, only the elements of the format, objects only of the four classes the SLAP
//! protocol uses, references only to containers already complete (no cycles), bounded depth
//! and size: every value is weighed in bytes as it is decoded (its text, and a fixed cost per
//! value), a reference as the whole value it repeats, so that what a document expands to in
//! memory is bounded ([`MAX_EXPANDED_BYTES`]) whatever its references; only containers that a
//! reference names are kept for copying. [`decode_within`] lets the caller charge the weight
//! to a budget as it grows. The second level of escaping is undone leniently, as the Python
//! decoder does: `&` that starts no entity is kept.
//!
//! Over 800 lines with its tests; the codec itself is under 800.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};

/// A marshalled value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Set(Vec<Value>),
    /// Pairs in document order (the encoder sorts them by key).
    Dict(Vec<(Value, Value)>),
    Object(Object),
}

/// The classes of `slapos.slap.slap` the protocol exchanges; any other is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlapClass {
    Computer,
    ComputerPartition,
    SoftwareRelease,
    SoftwareInstance,
}

impl SlapClass {
    pub const MODULE: &'static str = "slapos.slap.slap";

    pub fn name(self) -> &'static str {
        match self {
            SlapClass::Computer => "Computer",
            SlapClass::ComputerPartition => "ComputerPartition",
            SlapClass::SoftwareRelease => "SoftwareRelease",
            SlapClass::SoftwareInstance => "SoftwareInstance",
        }
    }

    fn parse(module: &str, class: &str) -> Option<Self> {
        if module != Self::MODULE {
            return None;
        }
        [
            SlapClass::Computer,
            SlapClass::ComputerPartition,
            SlapClass::SoftwareRelease,
            SlapClass::SoftwareInstance,
        ]
        .into_iter()
        .find(|c| c.name() == class)
    }
}

/// An instance of a [`SlapClass`]: its constructor's arguments and its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub class: SlapClass,
    pub args: Vec<Value>,
    pub attributes: Vec<(Value, Value)>,
}

impl Value {
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    /// A dictionary with string keys.
    pub fn dict<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Self {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::String(k.into()), v))
                .collect(),
        )
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value under the string key `key` of a dictionary (or an object's attributes).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let pairs = match self {
            Value::Dict(pairs) => pairs,
            Value::Object(object) => &object.attributes,
            _ => return None,
        };
        pairs
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

/// Why a document is not a marshalled value we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarshalError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("expected {expected}, found {found}")]
    Unexpected { expected: String, found: String },
    #[error("unknown element <{0}>")]
    UnknownElement(String),
    #[error("objects of {module}.{class} are not accepted")]
    ClassRefused { module: String, class: String },
    #[error("<{element}> holds {text:?}, not a {what}")]
    BadScalar {
        element: &'static str,
        text: String,
        what: &'static str,
    },
    #[error("<{element}> needs the attribute {attribute}")]
    MissingAttribute {
        element: String,
        attribute: &'static str,
    },
    #[error("reference to {0}, which is not a complete container before it")]
    BadReference(String),
    #[error("id {0} is used twice")]
    DuplicateId(String),
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("more than {MAX_EXPANDED_BYTES} bytes once references are expanded")]
    TooLarge,
    /// The caller's budget could not pay for the document's next [`AFFORD_STEP`] bytes.
    #[error("the replica holds too many documents at once to decode this one; retry shortly")]
    Unaffordable,
    #[error("a dictionary with an odd number of elements")]
    OddDictionary,
}

/// Deeper than any SLAP document (a computer's partitions' parameters are about 8 levels).
pub const MAX_DEPTH: usize = 64;
/// What one document may weigh: its values' text plus a [`Value`]'s size per value, references
/// counted as the values they repeat, referenced containers twice (the copy kept). Four
/// times the largest SLAP body accepted (4 MiB), so any document a client really sends fits (a
/// computer of 10,000 partitions weighs about 8.3 MiB); a reference bomb is refused after at
/// most this much work, having held at most [`BYTES_PER_WEIGHT`] times it.
pub const MAX_EXPANDED_BYTES: usize = 16 << 20;
/// What a decoded value costs besides its text: a [`Value`] in memory.
const VALUE_BYTES: usize = size_of::<Value>();
/// [`decode_within`] asks for its budget in steps of this much weight, not per value.
pub const AFFORD_STEP: usize = 64 << 10;
/// Most memory the decoder holds per byte of weight (the decoded tree, the copies of
/// referable containers it keeps, containers' growth): measured by the `decode_cost` test.
pub const BYTES_PER_WEIGHT: u64 = 4;

/// Writes `value` as `xml_marshaller.dumps` does.
pub fn encode(value: &Value) -> String {
    let mut encoder = Encoder {
        out: String::from("<marshal>"),
        next_id: 2,
    };
    encoder.value(value);
    encoder.out.push_str("</marshal>");
    encoder.out
}

struct Encoder {
    out: String,
    next_id: u32,
}

impl Encoder {
    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn container(&mut self, tag: &str, items: &[Value]) {
        let id = self.id();
        self.open(tag, Some(id), items.is_empty());
        for item in items {
            self.value(item);
        }
        if !items.is_empty() {
            let _ = write!(self.out, "</{tag}>");
        }
    }

    fn open(&mut self, tag: &str, id: Option<u32>, empty: bool) {
        let _ = write!(self.out, "<{tag}");
        if let Some(id) = id {
            let _ = write!(self.out, " id=\"i{id}\"");
        }
        self.out.push_str(if empty { "/>" } else { ">" });
    }

    fn dict(&mut self, pairs: &[(Value, Value)]) {
        let id = self.id();
        self.open("dictionary", Some(id), pairs.is_empty());
        let mut sorted: Vec<&(Value, Value)> = pairs.iter().collect();
        sorted.sort_by(|a, b| key_order(&a.0, &b.0));
        for (k, v) in sorted {
            self.value(k);
            self.value(v);
        }
        if !pairs.is_empty() {
            self.out.push_str("</dictionary>");
        }
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::None => self.out.push_str("<none/>"),
            Value::Bool(b) => {
                let _ = write!(self.out, "<bool>{}</bool>", u8::from(*b));
            }
            Value::Int(i) => {
                let _ = write!(self.out, "<int>{i}</int>");
            }
            Value::Float(f) => {
                let _ = write!(self.out, "<float>{}</float>", python_float(*f));
            }
            Value::String(s) => {
                self.out.push_str("<string>");
                escape_twice(&mut self.out, s);
                self.out.push_str("</string>");
            }
            Value::Tuple(items) => {
                self.open("tuple", None, items.is_empty());
                for item in items {
                    self.value(item);
                }
                if !items.is_empty() {
                    self.out.push_str("</tuple>");
                }
            }
            Value::List(items) => self.container("list", items),
            Value::Set(items) => self.container("set", items),
            Value::Dict(pairs) => self.dict(pairs),
            Value::Object(object) => {
                let id = self.id();
                let _ = write!(
                    self.out,
                    "<object id=\"i{id}\" module=\"{}\" class=\"{}\">",
                    SlapClass::MODULE,
                    object.class.name()
                );
                self.value(&Value::Tuple(object.args.clone()));
                self.dict(&object.attributes);
                self.out.push_str("</object>");
            }
        }
    }
}

/// Python sorts a dictionary's keys; ours are strings (code point order, which is UTF-8 byte
/// order) or, rarely, numbers.
fn key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        _ => std::cmp::Ordering::Equal,
    }
}

/// Python's `repr` of a float for the usual cases (`2.5`, `1e+20`, `inf`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == f.trunc() && f.abs() < 1e16 {
        return format!("{f:.1}");
    }
    let text = format!("{f:e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') && f.abs() >= 1e16 => {
            format!("{mantissa}e+{exponent:0>2}")
        }
        _ => format!("{f}"),
    }
}

/// `&`, `<`, `>` escaped, then `&` escaped again; non-ASCII as decimal character references.
fn escape_twice(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;amp;"),
            '<' => out.push_str("&amp;lt;"),
            '>' => out.push_str("&amp;gt;"),
            // A raw carriage return would be read back as a line feed (XML normalises line
            // ends); the reference keeps it.
            '\r' => out.push_str("&#13;"),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
        }
    }
}

/// Undoes the second level of escaping: the five XML entities and character references; an
/// `&` that starts none of them is kept as it is.
fn unescape_lenient(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let number = if let Some(hex) = name.strip_prefix("#x") {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = name.strip_prefix('#') {
                        dec.parse().ok()
                    } else {
                        None
                    };
                    number.and_then(char::from_u32)
                }
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Reads one marshalled value.
pub fn decode(xml: &str) -> Result<Value, MarshalError> {
    decode_within(xml, &mut |_| true)
}

/// [`decode`], asking `afford(weight)` before the document weighs more than each multiple of
/// [`AFFORD_STEP`] (`weight` is that multiple; memory is at most [`BYTES_PER_WEIGHT`] times
/// it): the caller's way to charge a budget shared with other calls as the document grows.
/// Refused: [`MarshalError::Unaffordable`].
pub fn decode_within(
    xml: &str,
    afford: &mut dyn FnMut(usize) -> bool,
) -> Result<Value, MarshalError> {
    let mut decoder = Decoder {
        reader: quick_xml::Reader::from_str(xml),
        referenced: HashSet::new(),
        ids: HashMap::new(),
        sizes: HashMap::new(),
        weight: 0,
        afforded: 0,
        afford,
    };
    decoder.find_references(xml)?;
    let root = match decoder.next_element()? {
        Some((start, empty)) if start.local_name().as_ref() == b"marshal" && !empty => start,
        Some((start, _)) => {
            return Err(MarshalError::Unexpected {
                expected: "<marshal>".into(),
                found: format!("<{}>", name_of(&start)),
            });
        }
        None => {
            return Err(MarshalError::Unexpected {
                expected: "<marshal>".into(),
                found: "the end".into(),
            });
        }
    };
    drop(root);
    let value = match decoder.next_element()? {
        Some((start, empty)) => decoder.value(&start, empty, 1)?,
        None => {
            return Err(MarshalError::Unexpected {
                expected: "a value".into(),
                found: "</marshal>".into(),
            });
        }
    };
    decoder.expect_end("marshal")?;
    match decoder.next_event()? {
        Event::Eof => Ok(value),
        other => Err(MarshalError::Unexpected {
            expected: "the end of the document".into(),
            found: describe(&other),
        }),
    }
}

struct Decoder<'a, 'f> {
    reader: quick_xml::Reader<&'a [u8]>,
    /// The ids the document's `<reference>`s name: only those containers are kept, copied,
    /// for the references to copy again (xml_marshaller gives every container an id; keeping
    /// them all would hold each nested value once per level).
    referenced: HashSet<String>,
    /// Complete referenced containers by id.
    ids: HashMap<String, Value>,
    /// What each of them weighs (bytes, see [`MAX_EXPANDED_BYTES`]).
    sizes: HashMap<String, usize>,
    /// What the document decoded so far weighs.
    weight: usize,
    /// What `afford` agreed to so far.
    afforded: usize,
    afford: &'f mut dyn FnMut(usize) -> bool,
}

fn name_of(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.local_name().as_ref()).into_owned()
}

fn describe(event: &Event<'_>) -> String {
    match event {
        Event::Start(s) | Event::Empty(s) => format!("<{}>", name_of(s)),
        Event::End(e) => format!("</{}>", String::from_utf8_lossy(e.local_name().as_ref())),
        Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => "text".into(),
        Event::Eof => "the end".into(),
        Event::DocType(_) => "a DOCTYPE".into(),
        Event::PI(_) => "a processing instruction".into(),
        Event::Decl(_) => "an XML declaration".into(),
        Event::Comment(_) => "a comment".into(),
    }
}

/// The character an entity or character reference in text stands for: the five predefined
/// entities only (documents cannot define others: a DOCTYPE is refused).
pub fn resolve(reference: &quick_xml::events::BytesRef<'_>) -> Result<char, String> {
    if let Some(c) = reference.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c);
    }
    let name: &[u8] = reference;
    Ok(match name {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        other => {
            return Err(format!(
                "unknown entity &{};",
                String::from_utf8_lossy(other)
            ));
        }
    })
}

fn xml_error(e: impl std::fmt::Display) -> MarshalError {
    MarshalError::Xml(e.to_string())
}

impl<'a> Decoder<'a, '_> {
    /// The next event that matters: comments and whitespace between elements are skipped; an
    /// XML declaration only at the start; a DOCTYPE (entity definitions) never.
    fn next_event(&mut self) -> Result<Event<'a>, MarshalError> {
        loop {
            let position = self.reader.buffer_position();
            let event = self.reader.read_event().map_err(xml_error)?;
            match event {
                Event::Comment(_) => {}
                Event::Decl(_) if position == 0 => {}
                Event::Text(ref t) if t.iter().all(u8::is_ascii_whitespace) => {}
                Event::DocType(_) => {
                    return Err(MarshalError::Unexpected {
                        expected: "a value".into(),
                        found: "a DOCTYPE (not accepted)".into(),
                    });
                }
                other => return Ok(other),
            }
        }
    }

    /// The next element's start (and whether it is empty), or `None` at an end tag.
    fn next_element(&mut self) -> Result<Option<(BytesStart<'a>, bool)>, MarshalError> {
        match self.next_event()? {
            Event::Start(s) => Ok(Some((s, false))),
            Event::Empty(s) => Ok(Some((s, true))),
            Event::End(_) | Event::Eof => Ok(None),
            other => Err(MarshalError::Unexpected {
                expected: "an element".into(),
                found: describe(&other),
            }),
        }
    }

    fn expect_end(&mut self, name: &str) -> Result<(), MarshalError> {
        match self.next_event()? {
            Event::End(e) if e.local_name().as_ref() == name.as_bytes() => Ok(()),
            other => Err(MarshalError::Unexpected {
                expected: format!("</{name}>"),
                found: describe(&other),
            }),
        }
    }

    fn weigh(&mut self, bytes: usize) -> Result<(), MarshalError> {
        self.weight = self.weight.saturating_add(bytes);
        if self.weight > MAX_EXPANDED_BYTES {
            return Err(MarshalError::TooLarge);
        }
        if self.weight > self.afforded {
            let next = self.weight.next_multiple_of(AFFORD_STEP);
            if !(self.afford)(next) {
                return Err(MarshalError::Unaffordable);
            }
            self.afforded = next;
        }
        Ok(())
    }

    fn attribute(
        start: &BytesStart<'_>,
        attribute: &'static str,
    ) -> Result<Option<String>, MarshalError> {
        match start.try_get_attribute(attribute).map_err(xml_error)? {
            None => Ok(None),
            Some(a) => Ok(Some(a.unescape_value().map_err(xml_error)?.into_owned())),
        }
    }

    fn required(start: &BytesStart<'_>, attribute: &'static str) -> Result<String, MarshalError> {
        Self::attribute(start, attribute)?.ok_or_else(|| MarshalError::MissingAttribute {
            element: name_of(start),
            attribute,
        })
    }

    /// The text of a scalar element up to its end tag, both levels of escaping undone.
    fn text(&mut self, element: &str) -> Result<String, MarshalError> {
        let mut text = String::new();
        loop {
            match self.reader.read_event().map_err(xml_error)? {
                Event::Text(t) => text.push_str(&t.xml_content().map_err(xml_error)?),
                Event::CData(c) => text.push_str(&c.decode().map_err(xml_error)?),
                Event::GeneralRef(r) => text.push(resolve(&r).map_err(MarshalError::Xml)?),
                Event::Comment(_) => {}
                Event::End(e) if e.local_name().as_ref() == element.as_bytes() => {
                    return Ok(unescape_lenient(&text));
                }
                other => {
                    return Err(MarshalError::Unexpected {
                        expected: format!("text then </{element}>"),
                        found: describe(&other),
                    });
                }
            }
        }
    }

    /// The values of a container up to its end tag.
    fn items(&mut self, depth: usize) -> Result<Vec<Value>, MarshalError> {
        let mut items = Vec::new();
        while let Some((start, empty)) = self.next_element()? {
            items.push(self.value(&start, empty, depth + 1)?);
        }
        Ok(items)
    }

    fn register(
        &mut self,
        id: Option<String>,
        value: &Value,
        size: usize,
    ) -> Result<(), MarshalError> {
        if let Some(id) = id.filter(|id| self.referenced.contains(id)) {
            if self.ids.contains_key(&id) {
                return Err(MarshalError::DuplicateId(id));
            }
            // The copy kept weighs what the container does.
            self.weigh(size)?;
            self.sizes.insert(id.clone(), size);
            self.ids.insert(id, value.clone());
        }
        Ok(())
    }

    /// Reads the whole document once for the ids its `<reference>`s name, each weighed as
    /// what remembering it costs.
    fn find_references(&mut self, xml: &str) -> Result<(), MarshalError> {
        let mut reader = quick_xml::Reader::from_str(xml);
        loop {
            match reader.read_event().map_err(xml_error)? {
                Event::Start(start) | Event::Empty(start)
                    if start.local_name().as_ref() == b"reference" =>
                {
                    if let Some(id) = Self::attribute(&start, "id")? {
                        self.weigh(id.len() + VALUE_BYTES)?;
                        self.referenced.insert(id);
                    }
                }
                Event::Eof => return Ok(()),
                _ => {}
            }
        }
    }

    fn value(
        &mut self,
        start: &BytesStart<'_>,
        empty: bool,
        depth: usize,
    ) -> Result<Value, MarshalError> {
        if depth > MAX_DEPTH {
            return Err(MarshalError::TooDeep);
        }
        self.weigh(VALUE_BYTES)?;
        let name = name_of(start);
        let before = self.weight;
        let scalar = |this: &mut Self, element: &'static str| -> Result<String, MarshalError> {
            if empty {
                Ok(String::new())
            } else {
                this.text(element)
            }
        };
        let value = match name.as_str() {
            "none" => {
                if !empty {
                    self.expect_end("none")?;
                }
                Value::None
            }
            "string" => {
                let text = scalar(self, "string")?;
                self.weigh(text.len())?;
                Value::String(text)
            }
            element @ ("int" | "long") => {
                let element = if element == "int" { "int" } else { "long" };
                let text = scalar(self, element)?;
                Value::Int(text.trim().parse().map_err(|_| MarshalError::BadScalar {
                    element,
                    text,
                    what: "64-bit integer",
                })?)
            }
            "float" => {
                let text = scalar(self, "float")?;
                Value::Float(text.trim().parse().map_err(|_| MarshalError::BadScalar {
                    element: "float",
                    text,
                    what: "number",
                })?)
            }
            "bool" => {
                let text = scalar(self, "bool")?;
                Value::Bool(match text.trim() {
                    "1" | "True" => true,
                    "0" | "False" => false,
                    _ => {
                        return Err(MarshalError::BadScalar {
                            element: "bool",
                            text,
                            what: "boolean (1 or 0)",
                        });
                    }
                })
            }
            "reference" => {
                let id = Self::required(start, "id")?;
                if !empty {
                    self.expect_end("reference")?;
                }
                let size = *self
                    .sizes
                    .get(&id)
                    .ok_or_else(|| MarshalError::BadReference(id.clone()))?;
                self.weigh(size)?;
                return self
                    .ids
                    .get(&id)
                    .cloned()
                    .ok_or(MarshalError::BadReference(id));
            }
            "tuple" => Value::Tuple(if empty {
                Vec::new()
            } else {
                self.items(depth)?
            }),
            "list" | "set" | "dictionary" => {
                let id = Self::attribute(start, "id")?;
                let items = if empty {
                    Vec::new()
                } else {
                    self.items(depth)?
                };
                let value = match name.as_str() {
                    "list" => Value::List(items),
                    "set" => Value::Set(items),
                    _ => Value::Dict(pairs(items)?),
                };
                let size = self.weight - before + VALUE_BYTES;
                self.register(id, &value, size)?;
                value
            }
            "object" => {
                let id = Self::attribute(start, "id")?;
                let module = Self::required(start, "module")?;
                let class = Self::required(start, "class")?;
                let class = SlapClass::parse(&module, &class)
                    .ok_or(MarshalError::ClassRefused { module, class })?;
                if empty {
                    return Err(MarshalError::Unexpected {
                        expected: "<tuple> and <dictionary> in <object>".into(),
                        found: "an empty <object/>".into(),
                    });
                }
                let mut parts = self.items(depth)?.into_iter();
                let (Some(Value::Tuple(args)), Some(Value::Dict(attributes)), None) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(MarshalError::Unexpected {
                        expected: "<tuple> then <dictionary> in <object>".into(),
                        found: "something else".into(),
                    });
                };
                let value = Value::Object(Object {
                    class,
                    args,
                    attributes,
                });
                let size = self.weight - before + VALUE_BYTES;
                self.register(id, &value, size)?;
                value
            }
            other => return Err(MarshalError::UnknownElement(other.to_string())),
        };
        Ok(value)
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, MarshalError> {
    if !items.len().is_multiple_of(2) {
        return Err(MarshalError::OddDictionary);
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python's `xml_marshaller.dumps` wrote (xml_marshaller from PyPI, Python 3.12) for
    /// `{'b': 'x<y&z', 'a': [1, 2.5, None, True, (1, 't')], 'c': {'k': 'v'}}`.
    const PYTHON_DICT: &str = "<marshal><dictionary id=\"i2\"><string>a</string><list id=\"i3\"><int>1</int><float>2.5</float><none/><bool>1</bool><tuple><int>1</int><string>t</string></tuple></list><string>b</string><string>x&amp;lt;y&amp;amp;z</string><string>c</string><dictionary id=\"i4\"><string>k</string><string>v</string></dictionary></dictionary></marshal>";

    fn python_dict() -> Value {
        Value::dict([
            ("b", Value::string("x<y&z")),
            (
                "a",
                Value::List(vec![
                    Value::Int(1),
                    Value::Float(2.5),
                    Value::None,
                    Value::Bool(true),
                    Value::Tuple(vec![Value::Int(1), Value::string("t")]),
                ]),
            ),
            ("c", Value::dict([("k", Value::string("v"))])),
        ])
    }

    #[test]
    fn encoding_matches_python_byte_for_byte() {
        assert_eq!(encode(&python_dict()), PYTHON_DICT);
        assert_eq!(
            encode(&Value::string("")),
            "<marshal><string></string></marshal>"
        );
        assert_eq!(
            encode(&Value::List(vec![])),
            "<marshal><list id=\"i2\"/></marshal>"
        );
        assert_eq!(encode(&Value::Tuple(vec![])), "<marshal><tuple/></marshal>");
        assert_eq!(
            encode(&Value::string("été")),
            "<marshal><string>&#233;t&#233;</string></marshal>"
        );
        assert_eq!(
            encode(&Value::string("a\"b'c>")),
            "<marshal><string>a\"b'c&amp;gt;</string></marshal>"
        );
        assert_eq!(
            encode(&Value::Float(1e20)),
            "<marshal><float>1e+20</float></marshal>"
        );
        let partition = Value::Object(Object {
            class: SlapClass::ComputerPartition,
            args: vec![Value::string("C"), Value::string("slappart0")],
            attributes: vec![(Value::string("_requested_state"), Value::string("started"))],
        });
        assert_eq!(
            encode(&partition),
            "<marshal><object id=\"i2\" module=\"slapos.slap.slap\" class=\"ComputerPartition\"><tuple><string>C</string><string>slappart0</string></tuple><dictionary id=\"i3\"><string>_requested_state</string><string>started</string></dictionary></object></marshal>"
        );
    }

    #[test]
    fn decoding_reads_what_python_writes() {
        let decoded = decode(PYTHON_DICT).expect("decodes");
        assert_eq!(decoded.get("b"), Some(&Value::string("x<y&z")));
        assert_eq!(encode(&decoded), PYTHON_DICT);
        // Python's own reading of singly escaped text, and of `&` starting no entity.
        assert_eq!(
            decode("<marshal><string>a&amp;b &amp;amp; c</string></marshal>"),
            Ok(Value::string("a&b & c"))
        );
        assert_eq!(
            decode("<?xml version='1.0'?>\n<marshal><string/></marshal>"),
            Ok(Value::string(""))
        );
        let shared = "<marshal><dictionary id=\"i2\"><string>x</string><list id=\"i3\"><int>1</int></list><string>y</string><reference id=\"i3\"/></dictionary></marshal>";
        let decoded = decode(shared).expect("decodes");
        assert_eq!(decoded.get("x"), decoded.get("y"));
        assert_eq!(
            decode("<marshal><long>5</long></marshal>"),
            Ok(Value::Int(5))
        );
    }

    #[test]
    fn decoding_refuses_what_is_not_the_format() {
        let refused = |xml: &str| decode(xml).expect_err(xml);
        assert!(matches!(
            refused(
                "<marshal><object id=\"i2\" module=\"os\" class=\"system\"><tuple/><dictionary id=\"i3\"/></object></marshal>"
            ),
            MarshalError::ClassRefused { .. }
        ));
        assert!(matches!(
            refused("<marshal><script/></marshal>"),
            MarshalError::UnknownElement(_)
        ));
        assert!(matches!(
            refused("<marshal><int>12x</int></marshal>"),
            MarshalError::BadScalar { .. }
        ));
        assert!(matches!(
            refused("<marshal><int>100000000000000000000</int></marshal>"),
            MarshalError::BadScalar { .. }
        ));
        assert!(matches!(
            refused("<marshal><list id=\"i2\"><reference id=\"i2\"/></list></marshal>"),
            MarshalError::BadReference(_)
        ));
        assert!(matches!(
            refused("<marshal><dictionary id=\"i2\"><string>k</string></dictionary></marshal>"),
            MarshalError::OddDictionary
        ));
        assert!(matches!(
            refused("<!DOCTYPE x [<!ENTITY a \"b\">]><marshal><string>&a;</string></marshal>"),
            MarshalError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("<marshal><string>x</string>"),
            MarshalError::Xml(_) | MarshalError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("<other/>"),
            MarshalError::Unexpected { .. }
        ));
        assert!(matches!(
            refused("<marshal><none/><none/></marshal>"),
            MarshalError::Unexpected { .. }
        ));
        let deep = format!(
            "<marshal>{}{}</marshal>",
            "<tuple>".repeat(MAX_DEPTH + 1),
            "</tuple>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(refused(&deep), MarshalError::TooDeep);
        // References to references: 2^40 values if expanded.
        let mut bomb =
            String::from("<marshal><tuple><list id=\"i0\"><int>1</int><int>1</int></list>");
        for i in 1..40 {
            let _ = write!(
                bomb,
                "<list id=\"i{i}\"><reference id=\"i{}\"/><reference id=\"i{}\"/></list>",
                i - 1,
                i - 1
            );
        }
        bomb.push_str("</tuple></marshal>");
        assert_eq!(refused(&bomb), MarshalError::TooLarge);
        // Few values, many bytes: one 1 MB string, then three lists of ten references each to
        // the one before (1,000 MB once expanded; it took 3.7 GB of memory when only values
        // were counted).
        let mut wide = format!(
            "<marshal><tuple><list id=\"i0\"><string>{}</string></list>",
            "x".repeat(1 << 20)
        );
        for i in 1..=3 {
            let _ = write!(wide, "<list id=\"i{i}\">");
            for _ in 0..10 {
                let _ = write!(wide, "<reference id=\"i{}\"/>", i - 1);
            }
            wide.push_str("</list>");
        }
        wide.push_str("</tuple></marshal>");
        assert_eq!(refused(&wide), MarshalError::TooLarge);
        // Ten copies of it (10 MB) are within bounds: references are not refused as such.
        let mut fine = format!(
            "<marshal><tuple><list id=\"i0\"><string>{}</string></list><list id=\"i1\">",
            "x".repeat(1 << 20)
        );
        for _ in 0..10 {
            fine.push_str("<reference id=\"i0\"/>");
        }
        fine.push_str("</list></tuple></marshal>");
        assert!(decode(&fine).is_ok());
    }
}
