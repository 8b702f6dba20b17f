//! The report's plots (plotters): grouped bar charts over categories and line charts of
//! distributions, as PNG or SVG. Text needs a TrueType font: `HABITS_FONT`, else DejaVu
//! Sans or Liberation Sans where Linux and macOS distributions put them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use clap::ValueEnum;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// The plots' file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Image {
    Png,
    Svg,
}

impl Image {
    pub fn extension(self) -> &'static str {
        match self {
            Image::Png => "png",
            Image::Svg => "svg",
        }
    }
}

/// One named series of values.
#[derive(Clone, Debug)]
pub struct Series<T> {
    pub name: String,
    pub values: Vec<T>,
}

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 560);
/// Tableau's ten colours: distinct, and readable by most colour-blind readers.
const COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    let (r, g, b) = COLORS[i % COLORS.len()];
    RGBColor(r, g, b)
}

const FONT_PATHS: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers the font once; the error names the fix.
pub fn ensure_font() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let candidates: Vec<PathBuf> = std::env::var_os("HABITS_FONT").map(PathBuf::from).into_iter().chain(FONT_PATHS.iter().map(PathBuf::from)).collect();
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(
                "no TrueType font for the plots' text: install one (Debian/Ubuntu: apt-get install fonts-dejavu-core) or set HABITS_FONT=/path/to/font.ttf"
                    .to_string(),
            );
        };
        let bytes: &'static [u8] = Box::leak(std::fs::read(path).map_err(|e| format!("cannot read the font {}: {e}", path.display()))?.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font: set HABITS_FONT to a .ttf file", path.display()))?;
        Ok(path.clone())
    });
    loaded.as_ref().map(|_| ()).map_err(|e| anyhow!("{e}"))
}

/// Something drawable on any plotters backend.
trait Plot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Writes `plot` to `<stem>.<png|svg>`; returns the file name.
fn save(plot: &impl Plot, dir: &Path, stem: &str, image: Image) -> Result<String> {
    ensure_font()?;
    let name = format!("{stem}.{}", image.extension());
    let path = dir.join(&name);
    match image {
        Image::Png => {
            let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
            plot.draw(&root)?;
            root.present().map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        }
        Image::Svg => {
            let root = SVGBackend::new(&path, SIZE).into_drawing_area();
            plot.draw(&root)?;
            root.present().map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(name)
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// Bars per category, one bar per series side by side.
pub struct Bars<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub categories: &'a [String],
    pub series: &'a [Series<f64>],
}

impl Bars<'_> {
    pub fn save(&self, dir: &Path, stem: &str, image: Image) -> Result<String> {
        save(self, dir, stem, image)
    }
}

impl Plot for Bars<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(err)?;
        let n = self.categories.len().max(1);
        let top = self.series.iter().flat_map(|s| s.values.iter().copied()).fold(0.0f64, f64::max);
        let top = if top > 0.0 { top * if self.series.len() > 1 { 1.3 } else { 1.1 } } else { 1.0 };
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FONT, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..n as f64, 0.0..top)
            .map_err(err)?;
        let categories = self.categories;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 && i < categories.len() { categories[i].clone() } else { String::new() }
            })
            .y_desc(self.y_label)
            .y_label_formatter(&|v| axis_number(*v, top))
            .label_style((FONT, if n > 6 { 12 } else { 14 }))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(err)?;
        let m = self.series.len().max(1);
        let width = 0.8 / m as f64;
        for (j, s) in self.series.iter().enumerate() {
            let c = color(j);
            let bars = s.values.iter().enumerate().map(move |(i, &v)| {
                let x0 = i as f64 + 0.1 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.92, v)], c.filled())
            });
            chart.draw_series(bars).map_err(err)?.label(s.name.clone()).legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], c.filled()));
        }
        if self.series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperMiddle)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()
                .map_err(err)?;
        }
        Ok(())
    }
}

/// An axis number: whole numbers once the axis spans 10 or more, thousands separated.
fn axis_number(v: f64, span: f64) -> String {
    if span < 10.0 {
        return format!("{v:.2}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if v < 0.0 && digits != "0" { format!("-{grouped}") } else { grouped }
}

/// Lines over a numeric x axis (distributions: x = bin, y = share).
pub struct Lines<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series<(f64, f64)>],
}

impl Lines<'_> {
    pub fn save(&self, dir: &Path, stem: &str, image: Image) -> Result<String> {
        save(self, dir, stem, image)
    }
}

impl Plot for Lines<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(err)?;
        let points = || self.series.iter().flat_map(|s| s.values.iter().copied());
        let (x_min, x_max) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| (a.min(x), b.max(x)));
        let (x_min, x_max) = if x_min.is_finite() && x_max > x_min { (x_min, x_max) } else { (0.0, 1.0) };
        let y_max = points().map(|(_, y)| y).fold(0.0f64, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FONT, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x_min..x_max, 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_label_formatter(&|v| axis_number(*v, x_max))
            .y_label_formatter(&|v| axis_number(*v, y_max))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(err)?;
        for (j, s) in self.series.iter().enumerate() {
            let c = color(j);
            chart
                .draw_series(LineSeries::new(s.values.iter().copied(), c.stroke_width(3)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font((FONT, 14)).draw().map_err(err)?;
        Ok(())
    }
}
