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
    ($root:expr, $chart:expr, $xr:expr, $yr:expr, $ytop:expr) => {{
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
    }};
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (area, foot) = root.split_vertically(root.dim_in_pixel().1 - 24);
    foot.draw(&Text::new(
        c.note.clone(),
        (10, 4),
        ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(|e| anyhow!("{e:?}"))?;
    let bands = c.bands.iter().flat_map(|b| [b.from, b.to]);
    let xs = c
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .chain(bands);
    let ys = c.series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
    let (x0, mut x1) = range(xs, c.x_log);
    let (y0, mut y1) = range(ys, c.y_log);
    if !c.bands.is_empty() {
        // Room above the series for two rows of the bands' labels, and
        // right of them for the legend.
        y1 *= if c.y_log { 100.0 } else { 2.0 };
        x1 = if c.x_log {
            x1 * 3.0
        } else {
            x1 + (x1 - x0) * 0.25
        };
    }
    match (c.x_log, c.y_log) {
        (false, false) => draw_with!(&area, c, x0..x1, y0..y1, y1),
        (true, false) => draw_with!(&area, c, (x0..x1).log_scale(), y0..y1, y1),
        (false, true) => draw_with!(&area, c, x0..x1, (y0..y1).log_scale(), y1),
        (true, true) => draw_with!(&area, c, (x0..x1).log_scale(), (y0..y1).log_scale(), y1),
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Writes `<dir>/<name>.svg` and `<dir>/<name>.png`; returns the files.
pub fn write(c: &Chart, dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(
        font_ready(),
        "no TrueType font for the plots' text ({}): apt-get install fonts-dejavu-core",
        FONTS[0]
    );
    std::fs::create_dir_all(dir)?;
    let size = (900, 560);
    let svg = dir.join(format!("{name}.svg"));
    draw(SVGBackend::new(&svg, size).into_drawing_area(), c)
        .with_context(|| format!("drawing {}", svg.display()))?;
    let png = dir.join(format!("{name}.png"));
    draw(BitMapBackend::new(&png, size).into_drawing_area(), c)
        .with_context(|| format!("drawing {}", png.display()))?;
    Ok(vec![svg, png])
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
