//! Line charts (plotters) as SVG and PNG, for the benchmark's plots
//! (`bench/src/plot.rs`) and the demo's picture of its boots
//! ([`crate::demo`]). The text is laid out with ab_glyph from a TrueType
//! font read at run time (Debian's fonts-dejavu-core), so no fontconfig or
//! freetype is needed.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Fonts tried for the PNG's text, in order.
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// One line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic X axis.
    pub x_log: bool,
    /// Logarithmic Y axis.
    pub y_log: bool,
    /// Named series of (x, y) points.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// A caption line under the title (the machine, the command).
    pub note: String,
    /// Labelled spans of the X axis, shaded behind the series (the demo's
    /// boots).
    pub bands: Vec<Band>,
}

/// A labelled span of a chart's X axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Written at the top of the span, a line of text a line of the label.
    pub label: String,
    /// Where it starts, in X axis units.
    pub from: f64,
    /// Where it ends.
    pub to: f64,
}

/// Registers a font for the plots' text, once; false when none is found.
fn font_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        for f in FONTS {
            if let Ok(bytes) = std::fs::read(f) {
                // plotters keeps fonts for the process's life and wants
                // 'static bytes: one font, leaked once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn range(points: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in points.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (if log { 1.0 } else { 0.0 }, 1.0);
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.05).max(1e-9);
        (if lo >= 0.0 { 0.0 } else { lo - pad }, hi + pad)
    }
}

/// An axis label: 3 significant digits, k/M/G above a thousand.
pub fn short(v: f64) -> String {
    let (x, unit) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = if x.abs() >= 100.0 || x == x.trunc() {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{unit}")
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

const BAND_COLORS: [RGBColor; 2] = [RGBColor(0xff, 0xe8, 0xc8), RGBColor(0xd8, 0xec, 0xd8)];

macro_rules! draw_with {
    ($root:expr, $chart:expr, $xr:expr, $yr:expr, $ytop:expr, $legend:expr) => {{
        let c = $chart;
        let mut ctx = ChartBuilder::on($root)
            .caption(&c.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d($xr, $yr)
            .map_err(|e| anyhow!("{e:?}"))?;
        ctx.configure_mesh()
            .x_label_formatter(&|v: &f64| short(*v))
            .y_label_formatter(&|v: &f64| short(*v))
            .x_desc(&c.x_label)
            .y_desc(&c.y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
        let bottom = if c.y_log { $ytop / 1e9 } else { 0.0 };
        // Labels of neighbouring bands in two rows: a narrow band's label
        // may reach over the next band.
        let row = 16
            * c.bands
                .iter()
                .map(|b| b.label.lines().count())
                .max()
                .unwrap_or(0) as i32
            + 6;
        ctx.draw_series(c.bands.iter().enumerate().map(|(i, b)| {
            let fill = BAND_COLORS[i % BAND_COLORS.len()].filled();
            Rectangle::new([(b.from, bottom), (b.to, $ytop)], fill)
        }))
        .map_err(|e| anyhow!("{e:?}"))?;
        // Over every band: one text a line of the label, 16 pixels apart.
        for (i, b) in c.bands.iter().enumerate() {
            let top = 4 + row * (i % 2) as i32;
            ctx.draw_series(b.label.lines().enumerate().map(|(k, line)| {
                EmptyElement::at((b.from, $ytop))
                    + Text::new(
                        line.to_string(),
                        (4, top + 16 * k as i32),
                        ("sans-serif", 13).into_font(),
                    )
            }))
            .map_err(|e| anyhow!("{e:?}"))?;
        }
        for (i, (name, pts)) in c.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|(x, y)| (!c.x_log || *x > 0.0) && (!c.y_log || *y > 0.0))
                .collect();
            ctx.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e:?}"))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        if $legend {
            ctx.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(if c.bands.is_empty() {
                    SeriesLabelPosition::UpperLeft
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .draw()
                .map_err(|e| anyhow!("{e:?}"))?;
        }
    }};
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (area, foot) = root.split_vertically(root.dim_in_pixel().1 - 24);
    draw_note(&foot, &c.note)?;
    draw_chart(&area, c, x_range(std::slice::from_ref(c)), true)?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// The grey caption line at a picture's foot.
fn draw_note<DB: DrawingBackend>(foot: &DrawingArea<DB, Shift>, note: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    foot.draw(&Text::new(
        note.to_string(),
        (10, 4),
        ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(|e| anyhow!("{e:?}"))
}

/// The X axis range that holds every series and band of `charts`.
fn x_range(charts: &[Chart]) -> (f64, f64) {
    let log = charts.iter().any(|c| c.x_log);
    let xs = charts.iter().flat_map(|c| {
        let bands = c.bands.iter().flat_map(|b| [b.from, b.to]);
        c.series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .chain(bands)
    });
    range(xs, log)
}

/// One chart in `area`, its X axis over `(x0, x1)` (widened for the
/// legend when there are bands), with the series' legend in it if
/// `legend`.
fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &Chart,
    (x0, mut x1): (f64, f64),
    legend: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let ys = c.series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
    let (y0, mut y1) = range(ys, c.y_log);
    if !c.bands.is_empty() {
        // Room above the series for two rows of the bands' labels (less
        // for one-line labels), and right of them for the legend.
        let lines = c.bands.iter().map(|b| b.label.lines().count()).max();
        y1 *= match (c.y_log, lines) {
            (true, _) => 100.0,
            (false, Some(0 | 1)) => 1.4,
            (false, _) => 2.0,
        };
        x1 = match (legend, c.x_log) {
            (false, _) => x1,
            (true, true) => x1 * 3.0,
            (true, false) => x1 + (x1 - x0) * 0.25,
        };
    }
    match (c.x_log, c.y_log) {
        (false, false) => draw_with!(area, c, x0..x1, y0..y1, y1, legend),
        (true, false) => draw_with!(area, c, (x0..x1).log_scale(), y0..y1, y1, legend),
        (false, true) => draw_with!(area, c, x0..x1, (y0..y1).log_scale(), y1, legend),
        (true, true) => {
            draw_with!(
                area,
                c,
                (x0..x1).log_scale(),
                (y0..y1).log_scale(),
                y1,
                legend
            )
        }
    }
    Ok(())
}

/// One panel of a stacked picture ([`write_panels`]): a chart, and a key
/// written beside it (the series' legend, then these lines: e.g. what
/// the bands' short labels stand for).
#[derive(Debug, Clone)]
pub struct Panel {
    /// The chart (its note is not drawn: the picture has one).
    pub chart: Chart,
    /// Lines of text right of the chart, top to bottom.
    pub key: Vec<String>,
}

/// Height of one panel, pixels.
const PANEL_HEIGHT: u32 = 400;
/// Width of a panel's key, pixels.
const KEY_WIDTH: u32 = 380;

fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
    note: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (head, rest) = root.split_vertically(36);
    head.draw(&Text::new(
        title.to_string(),
        (12, 8),
        ("sans-serif", 22).into_font(),
    ))
    .map_err(|e| anyhow!("{e:?}"))?;
    let (body, foot) = rest.split_vertically(rest.dim_in_pixel().1 - 24);
    draw_note(&foot, note)?;
    let charts: Vec<Chart> = panels.iter().map(|p| p.chart.clone()).collect();
    let xr = x_range(&charts);
    for (p, area) in panels.iter().zip(body.split_evenly((panels.len(), 1))) {
        let (chart, key) = area.split_horizontally(area.dim_in_pixel().0 - KEY_WIDTH);
        draw_chart(&chart, &p.chart, xr, false)?;
        // The series' legend heads the key: the chart's own box would
        // cover the bands' labels.
        let line_y = |i: usize| 44 + 17 * i as i32;
        for (i, (name, _)) in p.chart.series.iter().enumerate() {
            let (y, color) = (line_y(i), COLORS[i % COLORS.len()]);
            key.draw(&PathElement::new(
                vec![(4, y + 7), (28, y + 7)],
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e:?}"))?;
            key.draw(&Text::new(
                name.clone(),
                (34, y),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(|e| anyhow!("{e:?}"))?;
        }
        for (i, line) in p.key.iter().enumerate() {
            key.draw(&Text::new(
                line.clone(),
                (4, line_y(p.chart.series.len() + 1 + i)),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(|e| anyhow!("{e:?}"))?;
        }
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Writes `panels` one under another under `title`, on one X axis range,
/// with `note` at the foot, as `<dir>/<name>.svg` and `.png`; returns the
/// files, the SVG first.
pub fn write_panels(
    title: &str,
    panels: &[Panel],
    note: &str,
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(!panels.is_empty(), "no panels to draw");
    let size = (1100, 36 + 24 + PANEL_HEIGHT * panels.len() as u32);
    write_with(
        dir,
        name,
        size,
        &|root| draw_panels(root, title, panels, note),
        &|root| draw_panels(root, title, panels, note),
    )
}

/// Writes `<dir>/<name>.svg` and `<dir>/<name>.png`; returns the files.
pub fn write(c: &Chart, dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    write_with(dir, name, (900, 560), &|root| draw(root, c), &|root| {
        draw(root, c)
    })
}

/// A picture of `size` pixels drawn by `svg` and `png` into
/// `<dir>/<name>.svg` and `.png`; the files, the SVG first.
fn write_with(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    svg: &dyn Fn(DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
    png: &dyn Fn(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(
        font_ready(),
        "no TrueType font for the plots' text ({}): apt-get install fonts-dejavu-core",
        FONTS[0]
    );
    std::fs::create_dir_all(dir)?;
    let svg_file = dir.join(format!("{name}.svg"));
    svg(SVGBackend::new(&svg_file, size).into_drawing_area())
        .with_context(|| format!("drawing {}", svg_file.display()))?;
    let png_file = dir.join(format!("{name}.png"));
    png(BitMapBackend::new(&png_file, size).into_drawing_area())
        .with_context(|| format!("drawing {}", png_file.display()))?;
    Ok(vec![svg_file, png_file])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(short(1_137_310_502.0), "1.14G");
        assert_eq!(short(2_500_000.0), "2.50M");
        assert_eq!(short(64.0), "64");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(12.5), "12.5");
        assert_eq!(short(20_000.0), "20k");
    }

    #[test]
    fn panels_are_stacked_on_one_x_axis_with_their_keys() {
        let dir = std::env::temp_dir().join(format!("testbed-plot-panels-{}", std::process::id()));
        let panel = |name: &str, x1: f64| Panel {
            chart: Chart {
                title: format!("panel {name}"),
                x_label: "s".into(),
                y_label: "B/s".into(),
                x_log: false,
                y_log: false,
                series: vec![(format!("series {name}"), vec![(0.0, 1.0), (x1, 2.0)])],
                note: String::new(),
                bands: vec![Band {
                    label: "1".into(),
                    from: 0.5,
                    to: 1.5,
                }],
            },
            key: vec![format!("1 what band {name} was")],
        };
        let files = write_panels(
            "both",
            &[panel("a", 10.0), panel("b", 40.0)],
            "the note",
            &dir,
            "p",
        )
        .unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in [
            "both",
            "panel a",
            "panel b",
            "series a",
            "series b",
            "1 what band a was",
            "1 what band b was",
            "the note",
        ] {
            assert!(svg.contains(text), "{text:?} is not in the picture");
        }
        assert!(svg.contains("height=\"860\""), "two panels high");
        assert!(files[1].exists(), "no PNG");
        // One X range for both: panel a's axis reaches 40 s as b's does.
        assert_eq!(
            x_range(&[panel("a", 10.0).chart, panel("b", 40.0).chart]),
            range([0.0, 40.0, 0.5, 1.5].into_iter(), false)
        );
        assert!(write_panels("none", &[], "", &dir, "q").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_chart_is_drawn_as_svg() {
        let dir = std::env::temp_dir().join(format!("testbed-plot-svg-{}", std::process::id()));
        let c = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_log: true,
            y_log: true,
            series: vec![("s".into(), vec![(10.0, 1.0), (100.0, 5.0), (1000.0, 0.0)])],
            note: "n".into(),
            bands: vec![Band {
                label: "the band".into(),
                from: 20.0,
                to: 50.0,
            }],
        };
        let files = write(&c, &dir, "c").unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"));
        assert!(svg.contains("the band"), "no band label");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
