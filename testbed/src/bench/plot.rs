//! `vnsnap-testbed bench plot`: SVG figures from the benchmarks' JSON files.
//!
//! * `perf-scale.svg` from `scale.json`: per-VM pause (p50, max) and cut skew (p50, max)
//!   against the slice size, with the targets as dashed lines;
//! * `perf-modes.svg` from `snapshot.json`: pause and guest-observed stall (p50, max) of
//!   each snapshot mode, on a log scale (stop-copy pauses are seconds, ours milliseconds).
//!
//! Plotters' SVG backend writes text as SVG `<text>` and sizes it by estimate, so no font
//! library is needed at run time. A missing JSON file skips its figure.

use super::scale::{ScaleReport, ScaleSize};
use anyhow::Context;
use plotters::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One series of a figure: its legend, its colour and the value it takes from a record.
type Series<T> = (&'static str, RGBColor, fn(&T) -> f64);

/// Options of `bench plot`.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// Where the JSON files are (`scale.json`, `snapshot.json`).
    pub dir: PathBuf,
    /// Where the SVG files go.
    pub out_dir: PathBuf,
}

/// The fields of one mode of `snapshot.json` the figure needs.
#[derive(Clone, Debug, Deserialize)]
struct ModeFigures {
    mode: String,
    pause_p50_ms: f64,
    pause_max_ms: f64,
    stall_p50_ms: f64,
    stall_max_ms: f64,
}

/// The guest stalls over windows without a snapshot (the machine's own noise).
#[derive(Clone, Debug, Deserialize)]
struct IdleFigures {
    stall_max_ms: f64,
}

#[derive(Clone, Debug, Deserialize)]
struct SnapshotFigures {
    modes: Vec<ModeFigures>,
    idle: Option<IdleFigures>,
}

/// Draws every figure whose JSON file exists; returns the SVG files written.
pub fn run(opts: &PlotOptions) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let mut written = Vec::new();
    let scale = opts.dir.join("scale.json");
    if scale.is_file() {
        let r: ScaleReport =
            serde_json::from_slice(&std::fs::read(&scale)?).with_context(|| format!("reading {}", scale.display()))?;
        let out = opts.out_dir.join("perf-scale.svg");
        scale_figure(&r, &out)?;
        written.push(out);
    } else {
        println!("no {}: skipping perf-scale.svg", scale.display());
    }
    let snap = opts.dir.join("snapshot.json");
    if snap.is_file() {
        let r: SnapshotFigures =
            serde_json::from_slice(&std::fs::read(&snap)?).with_context(|| format!("reading {}", snap.display()))?;
        let out = opts.out_dir.join("perf-modes.svg");
        modes_figure(&r.modes, r.idle.as_ref(), &out)?;
        written.push(out);
    } else {
        println!("no {}: skipping perf-modes.svg", snap.display());
    }
    for w in &written {
        println!("wrote {}", w.display());
    }
    Ok(written)
}

fn scale_figure(r: &ScaleReport, out: &Path) -> anyhow::Result<()> {
    let sizes = &r.sizes;
    anyhow::ensure!(!sizes.is_empty(), "scale.json has no measured size");
    let xmax = sizes.iter().map(|s| s.vms).max().unwrap_or(16) as f64 + 2.0;
    let ymax = sizes.iter().map(|s| s.pause_max_ms.max(s.skew_max_ms)).fold(60.0, f64::max) * 1.15;
    let root = SVGBackend::new(out, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let hosts = sizes[0].hosts;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Consistent snapshot vs slice size ({hosts} hosts, {} MiB per VM)", r.vm_mib),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("VMs in the slice")
        .y_desc("milliseconds")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let series: [Series<ScaleSize>; 4] = [
        ("pause p50 (per VM)", RGBColor(31, 119, 180), |s| s.pause_p50_ms),
        ("pause max", RGBColor(174, 199, 232), |s| s.pause_max_ms),
        ("cut skew p50", RGBColor(214, 39, 40), |s| s.skew_p50_ms),
        ("cut skew max", RGBColor(255, 152, 150), |s| s.skew_max_ms),
    ];
    for (name, color, f) in series {
        let pts: Vec<(f64, f64)> = sizes.iter().map(|s| (s.vms as f64, f(s))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    for (name, y, color) in [
        ("target: pause p50 < 30 ms", 30.0, RGBColor(31, 119, 180)),
        ("target: skew < 50 ms", 50.0, RGBColor(214, 39, 40)),
    ] {
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, y), (xmax, y)], 6, 4, color.stroke_width(1)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn modes_figure(modes: &[ModeFigures], idle: Option<&IdleFigures>, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!modes.is_empty(), "snapshot.json has no mode");
    let floor = 0.1;
    // A decade and a half of headroom above the bars for the legend.
    let ymax =
        modes.iter().map(|m| m.pause_max_ms.max(m.stall_max_ms)).filter(|v| v.is_finite()).fold(10.0, f64::max) * 30.0;
    let n = modes.len();
    let root = SVGBackend::new(out, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Snapshot modes: per-VM pause and guest stall (3 VMs, 2 hosts)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, (floor..ymax).log_scale())?;
    let names: Vec<String> = modes.iter().map(|m| m.mode.clone()).collect();
    let label = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| if *y < 1.0 { format!("{y:.1}") } else { format!("{y:.0}") })
        .y_desc("milliseconds (log scale)")
        .draw()?;
    let bars: [Series<ModeFigures>; 4] = [
        ("pause p50", RGBColor(31, 119, 180), |m| m.pause_p50_ms),
        ("pause max", RGBColor(174, 199, 232), |m| m.pause_max_ms),
        ("stall p50", RGBColor(255, 127, 14), |m| m.stall_p50_ms),
        ("stall max", RGBColor(255, 187, 120), |m| m.stall_max_ms),
    ];
    let w = 0.8 / bars.len() as f64;
    for (k, (name, color, f)) in bars.into_iter().enumerate() {
        let rects: Vec<Rectangle<(f64, f64)>> = modes
            .iter()
            .enumerate()
            .filter(|(_, m)| f(m).is_finite())
            .map(|(i, m)| {
                let x0 = i as f64 - 0.4 + k as f64 * w;
                Rectangle::new([(x0, floor), (x0 + w * 0.9, f(m).max(floor))], color.filled())
            })
            .collect();
        chart
            .draw_series(rects)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    // Stalls below this line are within what the guests see without any snapshot.
    if let Some(idle) = idle.filter(|i| i.stall_max_ms.is_finite() && i.stall_max_ms > floor) {
        let (y, color) = (idle.stall_max_ms, RGBColor(90, 90, 90));
        chart
            .draw_series(DashedLineSeries::new(vec![(-0.5, y), (n as f64 - 0.5, y)], 6, 4, color.stroke_width(1)))?
            .label("stall max with no snapshot")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
