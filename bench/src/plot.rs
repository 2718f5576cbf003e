//! Plots of the scenarios' CSV results (plotters), as SVG and PNG; the text
//! is laid out with ab_glyph from a TrueType font read at run time
//! (Debian's fonts-dejavu-core), so no fontconfig or freetype is needed.
//!
//! - `forward-mpps.{png,svg}`: Mpps by frame size, bootcache and testpmd;
//! - `forward-latency-cdf.{png,svg}`: latency CDF at the zero-loss rate, 64 B;
//! - `storm-origin.{png,svg}` and `storm-completion.{png,svg}`: origin bytes
//!   and completion times by number of clients.

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

macro_rules! draw_with {
    ($root:expr, $chart:expr, $xr:expr, $yr:expr) => {{
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
            .position(SeriesLabelPosition::UpperLeft)
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
    let xs = c.series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let ys = c.series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
    let (x0, x1) = range(xs, c.x_log);
    let (y0, y1) = range(ys, c.y_log);
    match (c.x_log, c.y_log) {
        (false, false) => draw_with!(&area, c, x0..x1, y0..y1),
        (true, false) => draw_with!(&area, c, (x0..x1).log_scale(), y0..y1),
        (false, true) => draw_with!(&area, c, x0..x1, (y0..y1).log_scale()),
        (true, true) => draw_with!(&area, c, (x0..x1).log_scale(), (y0..y1).log_scale()),
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

/// A CSV file written by [`crate::results::Table`], read back.
pub fn read_csv(path: &Path) -> Result<crate::results::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run the scenario first)", path.display()))?;
    let mut lines = text.lines().map(split_csv);
    let columns = lines.next().context("empty CSV")?;
    let rows = lines.collect();
    Ok(crate::results::Table { columns, rows })
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Column `name` of every row.
fn col<'a>(t: &'a crate::results::Table, name: &str) -> Result<Vec<&'a str>> {
    let i = t
        .columns
        .iter()
        .position(|c| c == name)
        .with_context(|| format!("no column {name:?}"))?;
    Ok(t.rows.iter().map(|r| r[i].as_str()).collect())
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

/// Makes every plot whose CSV is in `dir`; `note` goes under each.
pub fn all(dir: &Path, note: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.join("forward.csv").exists() {
        let t = read_csv(&dir.join("forward.csv"))?;
        let (filter, size) = (col(&t, "filter")?, col(&t, "size")?);
        let mut series = Vec::new();
        for (dev, column) in [
            ("bootcache", "bootcache_mpps"),
            ("dpdk-testpmd io", "testpmd_mpps"),
        ] {
            let v = col(&t, column)?;
            let pts = (0..t.rows.len())
                .filter(|&i| filter[i] == "empty" && size[i] != "imix")
                .map(|i| (num(size[i]), num(v[i])))
                .collect();
            series.push((dev.to_string(), pts));
        }
        let c = Chart {
            title: "Forwarding rate by frame size (filter table empty)".into(),
            x_label: "frame size (bytes)".into(),
            y_label: "Mpps, both directions".into(),
            x_log: false,
            y_log: false,
            series,
            note: note.into(),
        };
        out.extend(write(&c, dir, "forward-mpps")?);
    }
    if dir.join("forward-latency-cdf.csv").exists() {
        let t = read_csv(&dir.join("forward-latency-cdf.csv"))?;
        let (dev, lat, q) = (
            col(&t, "device")?,
            col(&t, "latency_us")?,
            col(&t, "fraction")?,
        );
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for i in 0..t.rows.len() {
            let name = if dev[i] == "bootcache" {
                "bootcache"
            } else {
                "dpdk-testpmd io"
            };
            match series.iter_mut().find(|(n, _)| n == name) {
                Some((_, p)) => p.push((num(lat[i]), num(q[i]))),
                None => series.push((name.into(), vec![(num(lat[i]), num(q[i]))])),
            }
        }
        let c = Chart {
            title: "Latency CDF at the zero-loss rate, 64 B, filter empty".into(),
            x_label: "latency (µs), generator → device → generator".into(),
            y_label: "fraction of frames".into(),
            x_log: true,
            y_log: false,
            series,
            note: note.into(),
        };
        out.extend(write(&c, dir, "forward-latency-cdf")?);
    }
    if dir.join("storm.csv").exists() {
        let t = read_csv(&dir.join("storm.csv"))?;
        let n: Vec<f64> = col(&t, "clients")?.into_iter().map(num).collect();
        let pts = |column: &str| -> Result<Vec<(f64, f64)>> {
            Ok(col(&t, column)?
                .into_iter()
                .zip(&n)
                .map(|(v, &x)| (x, num(v)))
                .collect())
        };
        let c = Chart {
            title: "Boot storm: bytes the boot server carries".into(),
            x_label: "clients booting at once".into(),
            y_label: "origin bytes (both directions)".into(),
            x_log: true,
            y_log: true,
            series: vec![
                (
                    "bootcache, all (cold + warm)".into(),
                    pts("bootcache_origin_bytes")?,
                ),
                (
                    "bootcache, TFTP only".into(),
                    pts("bootcache_origin_tftp_bytes")?,
                ),
                ("dpdk-testpmd io".into(), pts("testpmd_origin_bytes")?),
            ],
            note: note.into(),
        };
        out.extend(write(&c, dir, "storm-origin")?);
        let c = Chart {
            title: "Boot storm: per-client completion time".into(),
            x_label: "clients booting at once".into(),
            y_label: "completion (ms)".into(),
            x_log: true,
            y_log: true,
            series: vec![
                ("bootcache warm p99".into(), pts("warm_p99_ms")?),
                ("bootcache warm p50".into(), pts("warm_p50_ms")?),
                ("testpmd io p99".into(), pts("testpmd_p99_ms")?),
                ("one cold client (bootcache)".into(), pts("cold_ms")?),
            ],
            note: note.into(),
        };
        out.extend(write(&c, dir, "storm-completion")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_through_the_reader() {
        let mut t = crate::results::Table::new(&["a", "b,c", "d"]);
        t.push(vec!["x \"y\"".into(), "1".into(), String::new()]);
        let dir = std::env::temp_dir().join(format!("bench-plot-test-{}", std::process::id()));
        t.write(&dir, "t").unwrap();
        assert_eq!(read_csv(&dir.join("t.csv")).unwrap(), t);
        std::fs::remove_dir_all(dir).unwrap();
    }

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
        let dir = std::env::temp_dir().join(format!("bench-plot-svg-{}", std::process::id()));
        let c = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_log: true,
            y_log: true,
            series: vec![("s".into(), vec![(10.0, 1.0), (100.0, 5.0), (1000.0, 0.0)])],
            note: "n".into(),
        };
        let files = write(&c, &dir, "c").unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
