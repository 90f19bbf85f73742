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

/// Compares two documents as `roxmltree` (an XML reader independent of the library's
/// quick-xml) reads them: the same elements (expanded names), the same attributes with the
/// same values (after XML's attribute-value normalisation, namespace declarations aside;
/// the root's `xsi:schemaLocation` is the writer's own), the same text (trimmed; comments
/// and whitespace-only text aside). Siblings of one name must come in the same order;
/// siblings of different names may interleave differently (the model keeps one list per
/// kind of child). `Err` names the first difference by its path.
pub fn same_document(input: &str, output: &str) -> Result<(), String> {
    let a = roxmltree::Document::parse(input).map_err(|e| format!("input does not parse: {e}"))?;
    let b = roxmltree::Document::parse(output).map_err(|e| format!("output does not parse: {e}"))?;
    same_element(a.root_element(), b.root_element(), "", true)
}

type Expanded = (String, String);

fn expanded(n: roxmltree::Node<'_, '_>) -> Expanded {
    (n.tag_name().namespace().unwrap_or("").to_owned(), n.tag_name().name().to_owned())
}

fn same_element(a: roxmltree::Node<'_, '_>, b: roxmltree::Node<'_, '_>, path: &str, root: bool) -> Result<(), String> {
    let here = format!("{path}/{}", a.tag_name().name());
    if expanded(a) != expanded(b) {
        return Err(format!("{here}: element {:?} became {:?}", expanded(a), expanded(b)));
    }
    let attrs = |n: roxmltree::Node<'_, '_>| -> std::collections::BTreeMap<Expanded, String> {
        n.attributes()
            .filter(|x| !(root && x.name() == "schemaLocation" && x.namespace() == Some(vnsnap_rspec::XSI_NS)))
            .map(|x| ((x.namespace().unwrap_or("").to_owned(), x.name().to_owned()), x.value().to_owned()))
            .collect()
    };
    let (aa, ba) = (attrs(a), attrs(b));
    if aa != ba {
        return Err(format!("{here}: attributes {aa:?} became {ba:?}"));
    }
    let text = |n: roxmltree::Node<'_, '_>| -> String {
        n.children().filter(|c| c.is_text()).filter_map(|c| c.text()).collect::<String>().trim().to_owned()
    };
    if text(a) != text(b) {
        return Err(format!("{here}: text {:?} became {:?}", text(a), text(b)));
    }
    let (ak, bk) = (element_children(a), element_children(b));
    if ak.len() != bk.len() {
        let names =
            |v: &[roxmltree::Node<'_, '_>]| v.iter().map(|c| c.tag_name().name().to_owned()).collect::<Vec<_>>();
        return Err(format!("{here}: children {:?} became {:?}", names(&ak), names(&bk)));
    }
    for (x, y) in ak.into_iter().zip(bk) {
        same_element(x, y, &here, false)?;
    }
    Ok(())
}

/// The element children of `n`, sorted by expanded name; the sort is stable, so same-named
/// siblings keep their order.
fn element_children<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    let mut v: Vec<_> = n.children().filter(|c| c.is_element()).collect();
    v.sort_by_key(|c| expanded(*c));
    v
}
