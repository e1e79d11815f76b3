//! `bench paper`'s PNG plots: one latency CDF per workload, and work completion time against
//! client threads. Text is drawn by plotters' ab_glyph backend from a TrueType file found
//! under /usr/share/fonts (no fontconfig); without one the plots are skipped with that reason.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::bench_paper::Workload;
use crate::paper_report::Report;

/// What was drawn (file names relative to the output directory), or why nothing was.
pub struct Plots {
    pub files: Vec<String>,
    pub skipped: Option<String>,
}

const FONT: &str = "sans-serif";

/// One line of a plot: the column's index (its colour), its label and its points.
type Series<'a> = (usize, &'a str, Vec<(f64, f64)>);
const SIZE: (u32, u32) = (900, 560);

pub fn plot_all(report: &Report, out: &Path) -> Plots {
    let mut plots = Plots {
        files: Vec::new(),
        skipped: None,
    };
    if let Err(e) = register_font() {
        plots.skipped = Some(format!("{e:#}"));
        return plots;
    }
    for workload in Workload::ALL {
        let name = format!("latency-cdf-{}.png", workload.key());
        match latency_cdf(report, workload, &out.join(&name)) {
            Ok(true) => plots.files.push(name),
            Ok(false) => {}
            Err(e) => plots.skipped = Some(format!("{name}: {e:#}")),
        }
    }
    let name = "completion-vs-threads.png".to_owned();
    match completion(report, &out.join(&name)) {
        Ok(true) => plots.files.push(name),
        Ok(false) => {}
        Err(e) => plots.skipped = Some(format!("{name}: {e:#}")),
    }
    plots
}

/// Registers the first TrueType font found as plotters' sans-serif.
fn register_font() -> Result<()> {
    let preferred = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ];
    let path = preferred
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| find_ttf(Path::new("/usr/share/fonts"), 4))
        .context("no TrueType font under /usr/share/fonts (apt-get install fonts-dejavu-core)")?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable TrueType font", path.display()))
}

fn find_ttf(dir: &Path, depth: u32) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in &entries {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf"))
        {
            return Some(path.clone());
        }
    }
    if depth == 0 {
        return None;
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|p| find_ttf(p, depth - 1))
}

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Latency CDF of one workload, a line per column with figures, log-scale µs.
fn latency_cdf(report: &Report, workload: Workload, path: &Path) -> Result<bool> {
    let series: Vec<Series> = report
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let cell = c.latency.iter().find(|(w, _)| *w == workload)?;
            let cdf = cell.1.stats.as_ref()?.cdf.iter().map(|&(q, us)| (us, q));
            Some((i, c.column.label(), cdf.collect()))
        })
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let min = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(f64::INFINITY, f64::min)
        .max(0.1);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Round-trip latency CDF: {}", workload.label()),
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((min * 0.8..max * 1.25).log_scale(), 0.0..1.0f64)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("fraction of requests")
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, label, cdf) in series {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(cdf, c.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(true)
}

/// Completion time of Table 2 against client threads, a line per column with figures.
fn completion(report: &Report, path: &Path) -> Result<bool> {
    let series: Vec<Series> = report
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.completion.is_empty())
        .map(|(i, c)| {
            let points = c
                .completion
                .iter()
                .map(|x| (f64::from(x.threads), x.seconds))
                .collect();
            (i, c.column.label(), points)
        })
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let max_t = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let max_s = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.001f64, f64::max);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Work completion: {} requests over N client threads",
                report.sizes.completion_requests
            ),
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((0.8..max_t * 1.3).log_scale(), 0.0..max_s * 1.15)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("client threads (log scale)")
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("time to complete all (s)")
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, label, points) in series {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(true)
}
