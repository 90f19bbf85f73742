//! A small sans-I/O XML-RPC codec: pure functions from bytes to [`Value`]s and back.
//!
//! What real GENI clients send is accepted: `<nil/>`, `<base64>`, `<i4>`/`<int>`/`<i8>`,
//! strings without a `<string>` tag, empty `<value/>`, and big payloads (the caller caps the
//! body size). A `<!DOCTYPE>` is refused, so no entity can be declared. The decoder streams:
//! it keeps one event of lookahead, allocates only for the text of values, caps nesting
//! ([`MAX_DEPTH`]) and the element count ([`MAX_ELEMENTS`]), and refuses anything but blanks
//! after the root element. What we write uses only
//! the types the AM API allows (string, int, boolean, double, array, struct).

use std::collections::BTreeMap;

use base64::Engine as _;
use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest value nesting accepted (arrays and structs).
pub const MAX_DEPTH: usize = 64;

/// Most XML elements accepted in a call. A real call has a few dozen (an Allocate: the RSpec is
/// one string, each credential one struct) and a Status of a thousand slivers a few thousand;
/// the cap bounds the decoded tree of a body of empty `<value/>`s to a few MB.
pub const MAX_ELEMENTS: usize = 100_000;

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<int>`, `<i4>` or `<i8>`.
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<string>` or untyped text.
    Str(String),
    /// `<double>`.
    Double(f64),
    /// `<dateTime.iso8601>` (kept as text; the AM API never sends it).
    DateTime(String),
    /// `<base64>`, decoded.
    Base64(Vec<u8>),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<struct>`.
    Struct(BTreeMap<String, Value>),
    /// `<nil/>`.
    Nil,
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// A struct from `(key, value)` pairs.
    pub fn structure<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Struct(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The text of a string (or base64 holding UTF-8).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Base64(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The struct's map.
    pub fn as_struct(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Struct(m) => Some(m),
            _ => None,
        }
    }

    /// The array's items.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A member of a struct.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_struct().and_then(|m| m.get(key))
    }

    /// Truthiness as Python clients mean it for flags: booleans, ints, and `"true"`/`"1"`.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Str(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
            _ => false,
        }
    }
}

/// Why a request or response could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not well-formed XML.
    #[error("Malformed XML at byte {0}: {1}")]
    Xml(u64, String),
    /// Well-formed but not XML-RPC.
    #[error("Not XML-RPC: {0}")]
    Shape(String),
    /// A DOCTYPE was present.
    #[error("DOCTYPE is not allowed")]
    Doctype,
    /// A typed value did not parse.
    #[error("Bad {0} value: {1:?}")]
    BadScalar(&'static str, String),
    /// Too deeply nested.
    #[error("Values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Too many elements.
    #[error("More than {0} XML elements")]
    TooManyElements(usize),
    /// The method name is not one the endpoint serves.
    #[error("Method {0} not supported")]
    UnknownMethod(String),
}

/// The element names of XML-RPC. Tags are matched against this set as borrowed bytes, so
/// reading an element allocates nothing; any other name is `Other` (and an error wherever it
/// appears).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    MethodCall,
    MethodName,
    MethodResponse,
    Fault,
    Params,
    Param,
    Value,
    String,
    Int,
    I4,
    I8,
    Boolean,
    Double,
    DateTime,
    Base64,
    Nil,
    Array,
    Data,
    Struct,
    Member,
    Name,
    Other,
}

impl Tag {
    /// The element name, for messages.
    fn name(self) -> &'static str {
        match self {
            Tag::MethodCall => "methodCall",
            Tag::MethodName => "methodName",
            Tag::MethodResponse => "methodResponse",
            Tag::Fault => "fault",
            Tag::Params => "params",
            Tag::Param => "param",
            Tag::Value => "value",
            Tag::String => "string",
            Tag::Int => "int",
            Tag::I4 => "i4",
            Tag::I8 => "i8",
            Tag::Boolean => "boolean",
            Tag::Double => "double",
            Tag::DateTime => "dateTime.iso8601",
            Tag::Base64 => "base64",
            Tag::Nil => "nil",
            Tag::Array => "array",
            Tag::Data => "data",
            Tag::Struct => "struct",
            Tag::Member => "member",
            Tag::Name => "name",
            Tag::Other => "?",
        }
    }

    fn of(local: &[u8]) -> Tag {
        match local {
            b"methodCall" => Tag::MethodCall,
            b"methodName" => Tag::MethodName,
            b"methodResponse" => Tag::MethodResponse,
            b"fault" => Tag::Fault,
            b"params" => Tag::Params,
            b"param" => Tag::Param,
            b"value" => Tag::Value,
            b"string" => Tag::String,
            b"int" => Tag::Int,
            b"i4" => Tag::I4,
            b"i8" => Tag::I8,
            b"boolean" => Tag::Boolean,
            b"double" => Tag::Double,
            b"dateTime.iso8601" => Tag::DateTime,
            b"base64" => Tag::Base64,
            b"nil" => Tag::Nil,
            b"array" => Tag::Array,
            b"data" => Tag::Data,
            b"struct" => Tag::Struct,
            b"member" => Tag::Member,
            b"name" => Tag::Name,
            _ => Tag::Other,
        }
    }
}

/// One XML event as the grammar sees it: adjacent text and CDATA merged, comments, processing
/// instructions and the declaration dropped.
#[derive(Debug)]
enum Ev {
    Open(Tag),
    Close(Tag),
    Text(String),
    Eof,
}

impl Ev {
    fn is_blank(&self) -> bool {
        matches!(self, Ev::Text(t) if t.trim().is_empty())
    }
}

/// A streaming recursive-descent parser over the document: it holds one event of lookahead
/// and never the whole token list, so memory is the decoded values plus a constant, however
/// many elements the input has. Elements are counted and capped.
struct Parser<'a> {
    r: Reader<&'a [u8]>,
    /// The event after a text run, read to find where the run ends.
    pending: Option<Ev>,
    /// The grammar's one event of lookahead.
    peeked: Option<Ev>,
    elements: usize,
    max_elements: usize,
    /// The name of the last element outside XML-RPC, for the error it leads to.
    other: String,
}

impl<'a> Parser<'a> {
    fn new(body: &'a [u8], max_elements: usize) -> Self {
        let mut r = Reader::from_reader(body);
        r.config_mut().expand_empty_elements = true;
        Parser { r, pending: None, peeked: None, elements: 0, max_elements, other: String::new() }
    }

    /// The next raw event that matters (no text merging).
    fn raw(&mut self) -> Result<Ev, CodecError> {
        if let Some(e) = self.pending.take() {
            return Ok(e);
        }
        loop {
            let pos = self.r.buffer_position();
            let err = |e: &dyn std::fmt::Display| CodecError::Xml(pos, e.to_string());
            match self.r.read_event().map_err(|e| err(&e))? {
                Event::Start(e) => {
                    self.elements += 1;
                    if self.elements > self.max_elements {
                        return Err(CodecError::TooManyElements(self.max_elements));
                    }
                    return Ok(Ev::Open(self.tag(e.local_name().as_ref())));
                }
                Event::End(e) => return Ok(Ev::Close(self.tag(e.local_name().as_ref()))),
                Event::Text(t) => return Ok(Ev::Text(t.unescape().map_err(|e| err(&e))?.into_owned())),
                Event::CData(c) => return Ok(Ev::Text(String::from_utf8_lossy(&c).into_owned())),
                Event::DocType(_) => return Err(CodecError::Doctype),
                Event::Eof => return Ok(Ev::Eof),
                Event::Empty(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
    }

    fn tag(&mut self, local: &[u8]) -> Tag {
        let t = Tag::of(local);
        if t == Tag::Other {
            self.other = clip(&String::from_utf8_lossy(local));
        }
        t
    }

    /// For error messages: what was found instead of what was expected.
    fn what(&self, e: &Ev) -> String {
        let name = |t: &Tag| if *t == Tag::Other { self.other.as_str() } else { t.name() };
        match e {
            Ev::Open(t) => format!("<{}>", name(t)),
            Ev::Close(t) => format!("</{}>", name(t)),
            Ev::Text(s) => format!("text {:?}", clip(s)),
            Ev::Eof => "end of document".into(),
        }
    }

    /// The next event, with adjacent text pieces merged into one.
    fn next(&mut self) -> Result<Ev, CodecError> {
        if let Some(e) = self.peeked.take() {
            return Ok(e);
        }
        let mut ev = self.raw()?;
        if let Ev::Text(ref mut acc) = ev {
            loop {
                match self.raw()? {
                    Ev::Text(more) => acc.push_str(&more),
                    other => {
                        self.pending = Some(other);
                        break;
                    }
                }
            }
        }
        Ok(ev)
    }

    fn peek(&mut self) -> Result<&Ev, CodecError> {
        let e = match self.peeked.take() {
            Some(e) => e,
            None => self.next()?,
        };
        Ok(self.peeked.insert(e))
    }

    /// The next event that is not whitespace-only text.
    fn next_nonblank(&mut self) -> Result<Ev, CodecError> {
        loop {
            let e = self.next()?;
            if !e.is_blank() {
                return Ok(e);
            }
        }
    }

    /// Whether the next non-blank event opens `tag` (consumes the blank text before it).
    fn peek_open(&mut self, tag: Tag) -> Result<bool, CodecError> {
        while self.peek()?.is_blank() {
            self.next()?;
        }
        Ok(matches!(self.peek()?, Ev::Open(t) if *t == tag))
    }

    fn open(&mut self, tag: Tag) -> Result<(), CodecError> {
        match self.next_nonblank()? {
            Ev::Open(t) if t == tag => Ok(()),
            other => Err(CodecError::Shape(format!("expected <{}>, found {}", tag.name(), self.what(&other)))),
        }
    }

    fn close(&mut self, tag: Tag) -> Result<(), CodecError> {
        match self.next_nonblank()? {
            Ev::Close(t) if t == tag => Ok(()),
            other => Err(CodecError::Shape(format!("expected </{}>, found {}", tag.name(), self.what(&other)))),
        }
    }

    /// Text up to the closing tag `tag` (which is consumed).
    fn text_until(&mut self, tag: Tag) -> Result<String, CodecError> {
        let (s, end) = match self.next()? {
            Ev::Text(s) => (s, self.next()?),
            other => (String::new(), other),
        };
        match end {
            Ev::Close(t) if t == tag => Ok(s),
            other => Err(CodecError::Shape(format!("expected text in <{}>, found {}", tag.name(), self.what(&other)))),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep);
        }
        self.open(Tag::Value)?;
        // Untyped text (or nothing) directly inside <value> is a string; text followed by a
        // type element is the whitespace around it.
        let ty = match self.next()? {
            Ev::Close(Tag::Value) => return Ok(Value::Str(String::new())),
            Ev::Text(s) => match self.next()? {
                Ev::Close(Tag::Value) => return Ok(Value::Str(s)),
                Ev::Open(t) if s.trim().is_empty() => t,
                other => return Err(CodecError::Shape(format!("value text followed by {}", self.what(&other)))),
            },
            Ev::Open(t) => t,
            Ev::Close(_) | Ev::Eof => return Err(CodecError::Shape("value without type".into())),
        };
        let v = match ty {
            Tag::String => Value::Str(self.text_until(Tag::String)?),
            Tag::Int | Tag::I4 | Tag::I8 => {
                let t = self.text_until(ty)?;
                Value::Int(t.trim().parse().map_err(|_| CodecError::BadScalar("int", clip(&t)))?)
            }
            Tag::Boolean => {
                let t = self.text_until(Tag::Boolean)?;
                match t.trim() {
                    "1" | "true" => Value::Bool(true),
                    "0" | "false" => Value::Bool(false),
                    _ => return Err(CodecError::BadScalar("boolean", clip(&t))),
                }
            }
            Tag::Double => {
                let t = self.text_until(Tag::Double)?;
                Value::Double(t.trim().parse().map_err(|_| CodecError::BadScalar("double", clip(&t)))?)
            }
            Tag::DateTime => Value::DateTime(self.text_until(ty)?.trim().to_string()),
            Tag::Base64 => {
                let t = self.text_until(Tag::Base64)?;
                let compact: Vec<u8> = t.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
                drop(t);
                Value::Base64(
                    base64::engine::general_purpose::STANDARD
                        .decode(&compact)
                        .map_err(|_| CodecError::BadScalar("base64", clip(&String::from_utf8_lossy(&compact))))?,
                )
            }
            Tag::Nil => {
                self.close(Tag::Nil)?;
                Value::Nil
            }
            Tag::Array => {
                self.open(Tag::Data)?;
                let mut items = Vec::new();
                while self.peek_open(Tag::Value)? {
                    items.push(self.value(depth + 1)?);
                }
                self.close(Tag::Data)?;
                self.close(Tag::Array)?;
                Value::Array(items)
            }
            Tag::Struct => {
                let mut m = BTreeMap::new();
                while self.peek_open(Tag::Member)? {
                    self.open(Tag::Member)?;
                    self.open(Tag::Name)?;
                    let k = self.text_until(Tag::Name)?;
                    let v = self.value(depth + 1)?;
                    self.close(Tag::Member)?;
                    m.insert(k, v);
                }
                self.close(Tag::Struct)?;
                Value::Struct(m)
            }
            other => return Err(CodecError::Shape(format!("unknown type {}", self.what(&Ev::Open(other))))),
        };
        self.close(Tag::Value)?;
        Ok(v)
    }

    fn params(&mut self) -> Result<Vec<Value>, CodecError> {
        let mut out = Vec::new();
        if self.peek_open(Tag::Params)? {
            self.open(Tag::Params)?;
            while self.peek_open(Tag::Param)? {
                self.open(Tag::Param)?;
                out.push(self.value(0)?);
                self.close(Tag::Param)?;
            }
            self.close(Tag::Params)?;
        }
        Ok(out)
    }

    /// After the root element only blanks (and comments) may follow: a second root element or
    /// stray text is refused rather than ignored.
    fn end(&mut self) -> Result<(), CodecError> {
        match self.next_nonblank()? {
            Ev::Eof => Ok(()),
            other => Err(CodecError::Shape(format!("{} after the root element", self.what(&other)))),
        }
    }
}

/// A bad scalar's text, shortened for the error message.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Decodes a `<methodCall>` into the method name and its parameters.
pub fn parse_call(body: &[u8]) -> Result<(String, Vec<Value>), CodecError> {
    parse_call_if(body, |_| true)
}

/// Like [`parse_call`], but asks `known` about the method name as soon as it is read and stops
/// with [`CodecError::UnknownMethod`] before decoding any parameter if the answer is no.
pub fn parse_call_if(body: &[u8], known: impl FnOnce(&str) -> bool) -> Result<(String, Vec<Value>), CodecError> {
    let mut p = Parser::new(body, MAX_ELEMENTS);
    p.open(Tag::MethodCall)?;
    p.open(Tag::MethodName)?;
    let name = p.text_until(Tag::MethodName)?.trim().to_string();
    if !known(&name) {
        return Err(CodecError::UnknownMethod(clip(&name)));
    }
    let params = p.params()?;
    p.close(Tag::MethodCall)?;
    p.end()?;
    Ok((name, params))
}

/// A decoded `<methodResponse>`: the value, or a fault's code and string.
pub fn parse_response(body: &[u8]) -> Result<Result<Value, (i64, String)>, CodecError> {
    // Replies come from the AM we called, and a big slice's Status has many elements.
    let mut p = Parser::new(body, MAX_ELEMENTS * 16);
    p.open(Tag::MethodResponse)?;
    if p.peek_open(Tag::Fault)? {
        p.open(Tag::Fault)?;
        let v = p.value(0)?;
        p.close(Tag::Fault)?;
        p.close(Tag::MethodResponse)?;
        p.end()?;
        let code = match v.get("faultCode") {
            Some(Value::Int(i)) => *i,
            _ => 0,
        };
        let msg = v.get("faultString").and_then(Value::as_str).unwrap_or_default().to_string();
        return Ok(Err((code, msg)));
    }
    let mut params = p.params()?;
    p.close(Tag::MethodResponse)?;
    p.end()?;
    if params.len() != 1 {
        return Err(CodecError::Shape(format!("{} params in response", params.len())));
    }
    Ok(Ok(params.remove(0)))
}

fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: &Value) {
    out.push_str("<value>");
    match v {
        Value::Int(i) => {
            // The AM API's ints are i4; larger ones need the i8 extension.
            let tag = if i32::try_from(*i).is_ok() { "int" } else { "i8" };
            out.push_str(&format!("<{tag}>{i}</{tag}>"));
        }
        Value::Bool(b) => out.push_str(if *b { "<boolean>1</boolean>" } else { "<boolean>0</boolean>" }),
        Value::Str(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        Value::Double(d) => out.push_str(&format!("<double>{d:?}</double>")),
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(b) => {
            out.push_str("<base64>");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push_str("</base64>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for i in items {
                write_value(out, i);
            }
            out.push_str("</data></array>");
        }
        Value::Struct(m) => {
            out.push_str("<struct>");
            for (k, v) in m {
                out.push_str("<member><name>");
                escape_into(out, k);
                out.push_str("</name>");
                write_value(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Encodes a successful `<methodResponse>`.
pub fn write_response(v: &Value) -> Vec<u8> {
    let mut s = String::from(DECL);
    s.push_str("<methodResponse><params><param>");
    write_value(&mut s, v);
    s.push_str("</param></params></methodResponse>\n");
    s.into_bytes()
}

/// Encodes a fault `<methodResponse>` (XML-RPC-level errors only).
pub fn write_fault(code: i64, msg: &str) -> Vec<u8> {
    let mut s = String::from(DECL);
    s.push_str("<methodResponse><fault>");
    write_value(&mut s, &Value::structure([("faultCode", Value::Int(code)), ("faultString", Value::str(msg))]));
    s.push_str("</fault></methodResponse>\n");
    s.into_bytes()
}

/// Encodes a `<methodCall>` (used by tests and the benchmark client).
pub fn write_call(method: &str, params: &[Value]) -> Vec<u8> {
    let mut s = String::from(DECL);
    s.push_str("<methodCall><methodName>");
    escape_into(&mut s, method);
    s.push_str("</methodName><params>");
    for p in params {
        s.push_str("<param>");
        write_value(&mut s, p);
        s.push_str("</param>");
    }
    s.push_str("</params></methodCall>\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_untyped_string_nil_base64_and_i4() {
        let body = br#"<?xml version='1.0'?>
<methodCall><methodName>Status</methodName><params>
<param><value>plain &amp; text</value></param>
<param><value><nil/></value></param>
<param><value><base64>PHg+PC94Pg==
</base64></value></param>
<param><value><i4>7</i4></value></param>
<param><value/></param>
<param><value><struct><member><name>a</name><value><boolean>1</boolean></value></member></struct></value></param>
</params></methodCall>"#;
        let (name, p) = parse_call(body).unwrap();
        assert_eq!(name, "Status");
        assert_eq!(p[0], Value::str("plain & text"));
        assert_eq!(p[1], Value::Nil);
        assert_eq!(p[2], Value::Base64(b"<x></x>".to_vec()));
        assert_eq!(p[3], Value::Int(7));
        assert_eq!(p[4], Value::str(""));
        assert_eq!(p[5].get("a"), Some(&Value::Bool(true)));
    }

    #[test]
    fn accepts_call_without_params() {
        let (name, p) = parse_call(b"<methodCall><methodName>GetVersion</methodName></methodCall>").unwrap();
        assert_eq!(name, "GetVersion");
        assert!(p.is_empty());
    }

    #[test]
    fn rejects_doctype() {
        let body = b"<!DOCTYPE x [<!ENTITY a 'b'>]><methodCall><methodName>x</methodName></methodCall>";
        assert_eq!(parse_call(body), Err(CodecError::Doctype));
    }

    #[test]
    fn rejects_truncated_body() {
        assert!(parse_call(b"<methodCall><methodName>x</methodName><params><param>").is_err());
    }

    #[test]
    fn rejects_second_root_element() {
        let one = "<methodCall><methodName>GetVersion</methodName></methodCall>";
        assert!(parse_call(format!("{one}\n<!-- fine -->\n").as_bytes()).is_ok());
        for tail in ["<methodCall><methodName>Delete</methodName></methodCall>", "<a/>", "junk"] {
            let r = parse_call(format!("{one}{tail}").as_bytes());
            assert!(matches!(&r, Err(CodecError::Shape(m)) if m.contains("after the root element")), "{tail}: {r:?}");
        }
        let resp = String::from_utf8(write_response(&Value::Int(1))).unwrap();
        assert!(parse_response(format!("{resp}<a/>").as_bytes()).is_err());
        let fault = String::from_utf8(write_fault(1, "x")).unwrap();
        assert!(parse_response(format!("{fault}<a/>").as_bytes()).is_err());
    }

    #[test]
    fn rejects_text_before_root_and_non_xmlrpc_root() {
        assert!(parse_call(b"x<methodCall><methodName>a</methodName></methodCall>").is_err());
        let r = parse_call("<a/>".repeat(1000).as_bytes());
        assert_eq!(r, Err(CodecError::Shape("expected <methodCall>, found <a>".into())));
        let r = parse_call(b"<methodCall><methodName>M</methodName><params><param><value><date>x</date>");
        assert_eq!(r, Err(CodecError::Shape("unknown type <date>".into())));
    }

    #[test]
    fn caps_element_count() {
        let n = MAX_ELEMENTS; // each <value/> is one element, plus the 6 around them
        let body = format!(
            "<methodCall><methodName>M</methodName><params><param><value><array><data>{}</data></array></value></param></params></methodCall>",
            "<value/>".repeat(n)
        );
        assert_eq!(parse_call(body.as_bytes()), Err(CodecError::TooManyElements(MAX_ELEMENTS)));
        let ok = body.replacen("<value/>", "", 10);
        assert_eq!(parse_call(ok.as_bytes()).unwrap().1[0].as_array().map(<[Value]>::len), Some(n - 10));
    }

    #[test]
    fn caps_nesting() {
        let deep = format!(
            "<methodCall><methodName>M</methodName><params><param>{}{}</param></params></methodCall>",
            "<value><array><data>".repeat(MAX_DEPTH + 2),
            "</data></array></value>".repeat(MAX_DEPTH + 2)
        );
        assert_eq!(parse_call(deep.as_bytes()), Err(CodecError::TooDeep));
    }

    #[test]
    fn unknown_method_stops_before_params() {
        // The params are malformed: an unknown method is reported without reading them.
        let body = b"<methodCall><methodName>Nope</methodName><params><param><value><bogus/>";
        assert_eq!(parse_call_if(body, |n| n == "Status"), Err(CodecError::UnknownMethod("Nope".into())));
        assert!(matches!(parse_call_if(body, |_| true), Err(CodecError::Shape(_))));
    }

    #[test]
    fn text_pieces_merge() {
        let body = b"<methodCall><methodName>M</methodName><params><param><value><string>a &amp; <![CDATA[<b>]]><!-- c -->d</string></value></param></params></methodCall>";
        assert_eq!(parse_call(body).unwrap().1[0], Value::str("a & <b>d"));
    }

    #[test]
    fn accepts_big_payload() {
        let big = "x".repeat(8 << 20);
        let body = write_call("Allocate", &[Value::str(big.clone())]);
        let (_, p) = parse_call(&body).unwrap();
        assert_eq!(p[0].as_str().map(str::len), Some(big.len()));
    }

    #[test]
    fn fault_round_trips() {
        let r = parse_response(&write_fault(-32700, "bad <xml>")).unwrap();
        assert_eq!(r, Err((-32700, "bad <xml>".to_string())));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            // Carriage returns are escaped; other control characters are not legal XML.
            "[ -~\u{a0}-\u{2ff}\n\t\r]{0,40}".prop_map(Value::Str),
            (-1e12f64..1e12).prop_map(Value::Double),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Base64),
            Just(Value::Nil),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..6).prop_map(Value::Struct),
            ]
        })
    }

    proptest! {
        #[test]
        fn values_round_trip(v in arb_value()) {
            let body = write_call("M", std::slice::from_ref(&v));
            let (_, p) = parse_call(&body).unwrap();
            prop_assert_eq!(&p[0], &v);
            let r = parse_response(&write_response(&v)).unwrap();
            prop_assert_eq!(r, Ok(v));
        }
    }
}
