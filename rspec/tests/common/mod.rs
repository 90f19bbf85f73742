//! Helpers shared by the integration tests: schema location, xmllint, corpus, canonical form.
#![allow(dead_code)] // reason: each test binary uses a different subset of these helpers

pub mod gen;

use std::path::{Path, PathBuf};
use std::process::Command;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use vnsnap_rspec::RSpecType;

/// The schema folder: `VNSNAP_SCHEMAS` if set, else the vendored copy in `tests/schemas`
/// (which CI clones carry; the shared tree at `../../shared/schemas/rspec-v3` is the origin).
pub fn schema_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("VNSNAP_SCHEMAS") {
        let p = PathBuf::from(dir);
        // Accept either the rspec-v3 folder itself or the schemas root above it.
        if p.join("rspec-v3").is_dir() {
            return p.join("rspec-v3");
        }
        return p;
    }
    let vendored = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas");
    if vendored.join("manifest-all.xsd").is_file() {
        return vendored;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/schemas/rspec-v3")
}

/// The driver schema for a document kind.
pub fn schema_for(t: RSpecType) -> PathBuf {
    schema_dir().join(match t {
        RSpecType::Request => "request-all.xsd",
        RSpecType::Manifest => "manifest-all.xsd",
        RSpecType::Advertisement => "advertisement-all.xsd",
    })
}

/// A scratch directory for files handed to xmllint.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Validates files against a schema with xmllint in one process. Returns the failures as
/// (file, xmllint output). Panics with a clear message if xmllint cannot be run: a missing
/// validator must fail the test, never skip it.
pub fn xmllint_validate(schema: &Path, files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    assert!(schema.is_file(), "schema {} not found", schema.display());
    let mut failures = Vec::new();
    // Batches keep the command line short for large runs.
    for chunk in files.chunks(200) {
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--nonet")
            .arg("--schema")
            .arg(schema)
            .args(chunk)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "xmllint could not be run ({e}); install it (Debian: apt-get install -y \
                     libxml2-utils, as scripts/setup.sh does). Schema validation is required."
                )
            });
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        for f in chunk {
            let name = f.display().to_string();
            if !stderr.contains(&format!("{name} validates")) {
                let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&name)).collect();
                failures.push((f.clone(), lines.join("\n")));
            }
        }
    }
    failures
}

/// Every corpus document as (file name, text).
pub fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// A canonical form of any XML document, computed independently of the library: expanded
/// names (`{ns}local`), attributes sorted, namespace declarations and the root's
/// `xsi:schemaLocation` dropped, comments and PIs dropped, text trimmed and whitespace-only
/// text dropped, and children sorted (the writer may reorder known children; extension
/// order is still checked by the model comparison). Two documents with the same canonical
/// form carry the same elements, attributes and text.
pub fn canonical(xml: &str) -> String {
    #[derive(Default)]
    struct El {
        name: String,
        attrs: Vec<String>,
        children: Vec<String>,
        text: String,
    }
    fn close(e: El) -> String {
        let mut attrs = e.attrs;
        attrs.sort();
        let mut children = e.children;
        children.sort();
        let text = e.text.trim();
        format!(
            "<{} {}>{}{}</>",
            e.name,
            attrs.join(" "),
            if text.is_empty() { String::new() } else { format!("\"{text}\"") },
            children.join("")
        )
    }
    fn ns(r: ResolveResult) -> String {
        match r {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.into_inner()).into_owned(),
            _ => String::new(),
        }
    }
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<El> = Vec::new();
    let mut root = None;
    loop {
        let (res, ev) = reader.read_resolved_event().expect("well-formed");
        let res = ns(res);
        let open = |res: String, e: &quick_xml::events::BytesStart, depth: usize| {
            let name = format!("{{{}}}{}", res, String::from_utf8_lossy(e.local_name().into_inner()));
            let mut el = El { name, ..El::default() };
            for a in e.attributes() {
                let a = a.unwrap();
                if a.key.as_namespace_binding().is_some() {
                    continue;
                }
                let (r, local) = reader.resolve_attribute(a.key);
                let an = format!("{{{}}}{}", ns(r), String::from_utf8_lossy(local.into_inner()));
                if depth == 0 && an.ends_with("}schemaLocation") {
                    continue;
                }
                el.attrs.push(format!("{an}={:?}", a.unescape_value().unwrap()));
            }
            el
        };
        match ev {
            Event::Start(e) => {
                let el = open(res, &e, stack.len());
                stack.push(el);
            }
            Event::Empty(e) => {
                let el = open(res, &e, stack.len());
                let s = close(el);
                match stack.last_mut() {
                    Some(p) => p.children.push(s),
                    None => root = Some(s),
                }
            }
            Event::End(_) => {
                let s = close(stack.pop().unwrap());
                match stack.last_mut() {
                    Some(p) => p.children.push(s),
                    None => root = Some(s),
                }
            }
            Event::Text(t) => {
                if let Some(p) = stack.last_mut() {
                    p.text.push_str(&t.unescape().unwrap());
                }
            }
            Event::CData(c) => {
                if let Some(p) = stack.last_mut() {
                    p.text.push_str(&String::from_utf8_lossy(&c.into_inner()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    root.expect("a root element")
}
