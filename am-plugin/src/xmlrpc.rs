//! A small sans-I/O XML-RPC codec: pure functions from bytes to [`Value`]s and back.
//!
//! What real GENI clients send is accepted: `<nil/>`, `<base64>`, `<i4>`/`<int>`/`<i8>`,
//! strings without a `<string>` tag, empty `<value/>`, and big payloads (the caller caps the
//! body size). A `<!DOCTYPE>` is refused, so no entity can be declared. What we write uses only
//! the types the AM API allows (string, int, boolean, double, array, struct).

use std::collections::BTreeMap;

use base64::Engine as _;
use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest value nesting accepted (arrays and structs).
pub const MAX_DEPTH: usize = 64;

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
}

/// A flattened XML event.
#[derive(Debug)]
enum Tok {
    Open(String),
    Close(String),
    Text(String),
}

fn tokenize(body: &[u8]) -> Result<Vec<Tok>, CodecError> {
    let mut r = Reader::from_reader(body);
    r.config_mut().expand_empty_elements = true;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        let pos = r.buffer_position();
        let err = |e: &dyn std::fmt::Display| CodecError::Xml(pos, e.to_string());
        match r.read_event_into(&mut buf).map_err(|e| err(&e))? {
            Event::Start(e) => out.push(Tok::Open(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())),
            Event::End(e) => out.push(Tok::Close(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())),
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| err(&e))?.into_owned();
                push_text(&mut out, s);
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c.into_inner()).into_owned();
                push_text(&mut out, s);
            }
            Event::DocType(_) => return Err(CodecError::Doctype),
            Event::Eof => break,
            Event::Empty(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn push_text(out: &mut Vec<Tok>, s: String) {
    if let Some(Tok::Text(prev)) = out.last_mut() {
        prev.push_str(&s);
    } else {
        out.push(Tok::Text(s));
    }
}

/// A cursor over tokens that skips whitespace-only text between elements.
struct Cur {
    toks: Vec<Tok>,
    i: usize,
}

impl Cur {
    fn skip_ws(&mut self) {
        while let Some(Tok::Text(t)) = self.toks.get(self.i) {
            if t.trim().is_empty() {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn open(&mut self, name: &str) -> Result<(), CodecError> {
        self.skip_ws();
        match self.toks.get(self.i) {
            Some(Tok::Open(n)) if n == name => {
                self.i += 1;
                Ok(())
            }
            other => Err(CodecError::Shape(format!("expected <{name}>, found {other:?}"))),
        }
    }

    fn close(&mut self, name: &str) -> Result<(), CodecError> {
        self.skip_ws();
        match self.toks.get(self.i) {
            Some(Tok::Close(n)) if n == name => {
                self.i += 1;
                Ok(())
            }
            other => Err(CodecError::Shape(format!("expected </{name}>, found {other:?}"))),
        }
    }

    fn peek_open(&mut self) -> Option<&str> {
        self.skip_ws();
        match self.toks.get(self.i) {
            Some(Tok::Open(n)) => Some(n),
            _ => None,
        }
    }

    /// Text up to the closing tag `name` (which is consumed).
    fn text_until(&mut self, name: &str) -> Result<String, CodecError> {
        let mut s = String::new();
        if let Some(Tok::Text(t)) = self.toks.get(self.i) {
            s = t.clone();
            self.i += 1;
        }
        match self.toks.get(self.i) {
            Some(Tok::Close(n)) if n == name => {
                self.i += 1;
                Ok(s)
            }
            other => Err(CodecError::Shape(format!("expected text in <{name}>, found {other:?}"))),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep);
        }
        self.open("value")?;
        // Untyped text (or nothing) directly inside <value> is a string.
        let typed = match self.toks.get(self.i) {
            Some(Tok::Text(t)) => match self.toks.get(self.i + 1) {
                Some(Tok::Close(n)) if n == "value" => {
                    let s = t.clone();
                    self.i += 2;
                    return Ok(Value::Str(s));
                }
                _ => true,
            },
            Some(Tok::Close(n)) if n == "value" => {
                self.i += 1;
                return Ok(Value::Str(String::new()));
            }
            _ => true,
        };
        debug_assert!(typed);
        let ty = self.peek_open().ok_or_else(|| CodecError::Shape("value without type".into()))?.to_string();
        self.i += 1;
        let v = match ty.as_str() {
            "string" => Value::Str(self.text_until("string")?),
            "int" | "i4" | "i8" => {
                let t = self.text_until(&ty)?;
                Value::Int(t.trim().parse().map_err(|_| CodecError::BadScalar("int", t.clone()))?)
            }
            "boolean" => {
                let t = self.text_until("boolean")?;
                match t.trim() {
                    "1" | "true" => Value::Bool(true),
                    "0" | "false" => Value::Bool(false),
                    _ => return Err(CodecError::BadScalar("boolean", t)),
                }
            }
            "double" => {
                let t = self.text_until("double")?;
                Value::Double(t.trim().parse().map_err(|_| CodecError::BadScalar("double", t.clone()))?)
            }
            "dateTime.iso8601" => Value::DateTime(self.text_until(&ty)?.trim().to_string()),
            "base64" => {
                let t = self.text_until("base64")?;
                let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                Value::Base64(
                    base64::engine::general_purpose::STANDARD
                        .decode(compact)
                        .map_err(|_| CodecError::BadScalar("base64", t.chars().take(40).collect()))?,
                )
            }
            "nil" => {
                self.close("nil")?;
                Value::Nil
            }
            "array" => {
                self.open("data")?;
                let mut items = Vec::new();
                while self.peek_open() == Some("value") {
                    items.push(self.value(depth + 1)?);
                }
                self.close("data")?;
                self.close("array")?;
                Value::Array(items)
            }
            "struct" => {
                let mut m = BTreeMap::new();
                while self.peek_open() == Some("member") {
                    self.i += 1;
                    self.open("name")?;
                    let k = self.text_until("name")?;
                    let v = self.value(depth + 1)?;
                    self.close("member")?;
                    m.insert(k, v);
                }
                self.close("struct")?;
                Value::Struct(m)
            }
            other => return Err(CodecError::Shape(format!("unknown type <{other}>"))),
        };
        self.close("value")?;
        Ok(v)
    }

    fn params(&mut self) -> Result<Vec<Value>, CodecError> {
        let mut out = Vec::new();
        if self.peek_open() == Some("params") {
            self.i += 1;
            while self.peek_open() == Some("param") {
                self.i += 1;
                out.push(self.value(0)?);
                self.close("param")?;
            }
            self.close("params")?;
        }
        Ok(out)
    }
}

/// Decodes a `<methodCall>` into the method name and its parameters.
pub fn parse_call(body: &[u8]) -> Result<(String, Vec<Value>), CodecError> {
    let mut c = Cur { toks: tokenize(body)?, i: 0 };
    c.open("methodCall")?;
    c.open("methodName")?;
    let name = c.text_until("methodName")?.trim().to_string();
    let params = c.params()?;
    c.close("methodCall")?;
    Ok((name, params))
}

/// A decoded `<methodResponse>`: the value, or a fault's code and string.
pub fn parse_response(body: &[u8]) -> Result<Result<Value, (i64, String)>, CodecError> {
    let mut c = Cur { toks: tokenize(body)?, i: 0 };
    c.open("methodResponse")?;
    if c.peek_open() == Some("fault") {
        c.i += 1;
        let v = c.value(0)?;
        let code = match v.get("faultCode") {
            Some(Value::Int(i)) => *i,
            _ => 0,
        };
        let msg = v.get("faultString").and_then(Value::as_str).unwrap_or_default().to_string();
        return Ok(Err((code, msg)));
    }
    let mut p = c.params()?;
    if p.len() != 1 {
        return Err(CodecError::Shape(format!("{} params in response", p.len())));
    }
    Ok(Ok(p.remove(0)))
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
