//! The smoke test's reports: the table, JSON and JUnit XML.

use super::super::output::table;
use super::*;

// ---- reports ----

/// The text report: a table per aggregate and a summary line.
pub fn text_report(slice: &str, reports: &[AggregateReport]) -> String {
    let mut out = String::new();
    for a in reports {
        let _ = writeln!(out, "{} ({}): {}", a.name, a.url, if a.passed() { "PASSED" } else { "FAILED" });
        let rows: Vec<Vec<String>> = a
            .steps
            .iter()
            .map(|s| {
                let err: String = if s.error.chars().count() > 300 {
                    s.error.chars().take(297).collect::<String>() + "..."
                } else {
                    s.error.clone()
                };
                vec![
                    s.step.to_string(),
                    s.outcome.as_str().to_string(),
                    if s.outcome == Outcome::Passed || s.outcome == Outcome::Failed {
                        format!("{:.2}", s.seconds)
                    } else {
                        String::new()
                    },
                    err,
                ]
            })
            .collect();
        out.push_str(&table(&["STEP", "RESULT", "SECONDS", "ERROR"], &rows));
        let _ = writeln!(out, "cleanup: {}\n", a.cleanup);
    }
    let passed = reports.iter().filter(|a| a.passed()).count();
    let _ = writeln!(out, "slice {slice}: {passed} of {} aggregates passed", reports.len());
    out
}

/// The JSON report.
pub fn json_report(slice: &str, reports: &[AggregateReport]) -> serde_json::Value {
    serde_json::json!({
        "slice": slice,
        "passed": reports.iter().all(AggregateReport::passed),
        "aggregates": reports.iter().map(|a| serde_json::json!({
            "name": a.name,
            "url": a.url,
            "passed": a.passed(),
            "cleanup": a.cleanup,
            "left_allocated": a.left_allocated,
            "steps": a.steps.iter().map(|s| serde_json::json!({
                "step": s.step,
                "result": match s.outcome {
                    Outcome::Passed => "passed",
                    Outcome::Failed => "failed",
                    Outcome::Skipped => "skipped",
                    Outcome::NotRun => "not_run",
                },
                "seconds": (s.seconds * 1000.0).round() / 1000.0,
                "error": s.error,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Text for XML attributes and content: escaped (quick-xml), and without characters XML 1.0
/// forbids, which no escape can carry (each becomes `?`).
fn xml_text(s: &str) -> String {
    let allowed = |c: char| !((c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{fffe}' || c == '\u{ffff}');
    let clean: String = s.chars().map(|c| if allowed(c) { c } else { '?' }).collect();
    quick_xml::escape::escape(clean.as_str()).into_owned()
}

/// The JUnit XML report: `<testsuites>` with one `<testsuite>` per aggregate and one
/// `<testcase>` per step (failed steps carry `<failure>`, skipped and not-run ones `<skipped>`).
pub fn junit_report(reports: &[AggregateReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let count = |a: &AggregateReport, o: &[Outcome]| a.steps.iter().filter(|s| o.contains(&s.outcome)).count();
    let total = |o: &[Outcome]| reports.iter().map(|a| count(a, o)).sum::<usize>();
    let time = |a: &AggregateReport| a.steps.iter().map(|s| s.seconds).sum::<f64>();
    let _ = writeln!(
        out,
        "<testsuites name=\"vnsnap smoke\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
        reports.iter().map(|a| a.steps.len()).sum::<usize>(),
        total(&[Outcome::Failed]),
        total(&[Outcome::Skipped, Outcome::NotRun]),
        reports.iter().map(time).sum::<f64>(),
    );
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S");
    for (i, a) in reports.iter().enumerate() {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" id=\"{i}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{stamp}\">",
            xml_text(&a.name),
            a.steps.len(),
            count(a, &[Outcome::Failed]),
            count(a, &[Outcome::Skipped, Outcome::NotRun]),
            time(a),
        );
        let _ = writeln!(
            out,
            "    <properties>\n      <property name=\"url\" value=\"{}\"/>\n    </properties>",
            xml_text(&a.url)
        );
        for s in &a.steps {
            let head = format!(
                "    <testcase name=\"{}\" classname=\"smoke.{}\" time=\"{:.3}\"",
                s.step,
                xml_text(&a.name),
                s.seconds
            );
            match s.outcome {
                Outcome::Passed => {
                    let _ = writeln!(out, "{head}/>");
                }
                Outcome::Failed => {
                    let e = xml_text(&s.error);
                    let _ = writeln!(
                        out,
                        "{head}>\n      <failure message=\"{e}\" type=\"{}\">{e}</failure>\n    </testcase>",
                        s.step
                    );
                }
                Outcome::Skipped | Outcome::NotRun => {
                    let _ =
                        writeln!(out, "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>", xml_text(&s.error));
                }
            }
        }
        let _ = writeln!(out, "    <system-out>cleanup: {}</system-out>\n  </testsuite>", xml_text(&a.cleanup));
    }
    out.push_str("</testsuites>\n");
    out
}
