//! Figures of curves against an integer axis, one colour per curve: the comparison's FID and IS
//! against step (the mean over seeds as a line, the range over seeds as a band) and the scaling
//! model's predictions against ranks or nodes (lines, with the measured points as rings); drawn
//! here on an RGB canvas with the built-in font, so that no plotting library is needed.
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::output::{font, png::encode_png};

/// One curve: (x, value, lowest, highest); the band between lowest and highest is shaded.
pub type Curve = Vec<(i64, f64, f64, f64)>;

/// One panel: a title, the x axis's name, every curve, and per curve (same colour) measured
/// points drawn as rings, none where `points` is shorter.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub curves: Vec<Curve>,
    pub points: Vec<Vec<(i64, f64)>>,
}

/// Distinct colours for up to ten arms (then they repeat).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

const PANEL_W: usize = 520;
const PANEL_H: usize = 360;
const MARGIN_L: usize = 70;
const MARGIN_T: usize = 34;
const MARGIN_B: usize = 40;
const LEGEND_ROW: usize = 20;

/// Writes the panels side by side with a legend of `arms` (one name per curve) below them.
pub fn write(path: &Path, panels: &[Panel], arms: &[String]) -> Result<()> {
    let width = panels.len().max(1) * PANEL_W;
    let height = PANEL_H + 10 + LEGEND_ROW * arms.len() + 10;
    let mut c = Canvas::new(width, height);
    for (i, p) in panels.iter().enumerate() {
        draw_panel(&mut c, i * PANEL_W, p);
    }
    for (i, name) in arms.iter().enumerate() {
        let y = PANEL_H + 10 + i * LEGEND_ROW;
        let colour = PALETTE[i % PALETTE.len()];
        c.rect(MARGIN_L, y + 4, 24, 8, colour, 1.0);
        c.text(MARGIN_L + 32, y + 1, name, 2, [0, 0, 0]);
    }
    let bytes =
        encode_png(width as u32, height as u32, png::ColorType::Rgb, &c.pixels).map_err(|e| {
            crate::error::Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("encoding the PNG: {e}")),
            }
        })?;
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, bytes).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

fn draw_panel(c: &mut Canvas, x0: usize, p: &Panel) {
    let measured = p.points.iter().flatten().map(|&(x, v)| (x, v, v, v));
    let (mut s_lo, mut s_hi, mut v_lo, mut v_hi) =
        (i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY);
    for (s, _, lo, hi) in p.curves.iter().flatten().copied().chain(measured) {
        s_lo = s_lo.min(s);
        s_hi = s_hi.max(s);
        v_lo = v_lo.min(lo);
        v_hi = v_hi.max(hi);
    }
    let (plot_x, plot_y) = (x0 + MARGIN_L, MARGIN_T);
    let (plot_w, plot_h) = (PANEL_W - MARGIN_L - 20, PANEL_H - MARGIN_T - MARGIN_B);
    c.text(plot_x, 8, &p.title, 2, [0, 0, 0]);
    if s_lo > s_hi {
        c.text(plot_x, plot_y + plot_h / 2, "no values", 2, [0, 0, 0]);
        return;
    }
    if s_hi == s_lo {
        s_hi = s_lo + 1;
    }
    let (v_lo, v_hi, ticks) = nice_range(v_lo, v_hi);
    let sx = |s: i64| plot_x as f64 + (s - s_lo) as f64 / (s_hi - s_lo) as f64 * plot_w as f64;
    let sy = |v: f64| plot_y as f64 + (v_hi - v) / (v_hi - v_lo) * plot_h as f64;
    for t in &ticks {
        let y = sy(*t).round() as usize;
        c.rect(plot_x, y, plot_w, 1, [225, 225, 225], 1.0);
        let label = tick_label(*t);
        c.text(
            plot_x.saturating_sub(8 + 6 * label.len()),
            y.saturating_sub(3),
            &label,
            1,
            [0, 0, 0],
        );
    }
    for s in step_ticks(s_lo, s_hi) {
        let x = sx(s).round() as usize;
        c.rect(x, plot_y + plot_h, 1, 5, [0, 0, 0], 1.0);
        let label = s.to_string();
        c.text(
            x.saturating_sub(3 * label.len()),
            plot_y + plot_h + 8,
            &label,
            1,
            [0, 0, 0],
        );
    }
    c.text(
        plot_x + plot_w / 2 - 12,
        plot_y + plot_h + 22,
        &p.x_label,
        1,
        [0, 0, 0],
    );
    c.rect(plot_x, plot_y, 1, plot_h, [0, 0, 0], 1.0);
    c.rect(plot_x, plot_y + plot_h, plot_w, 1, [0, 0, 0], 1.0);
    for (i, curve) in p.curves.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        for w in curve.windows(2) {
            let (a, b) = (w[0], w[1]);
            c.band(
                sx(a.0),
                sx(b.0),
                [sy(a.2), sy(b.2)],
                [sy(a.3), sy(b.3)],
                colour,
            );
        }
        for w in curve.windows(2) {
            c.line(sx(w[0].0), sy(w[0].1), sx(w[1].0), sy(w[1].1), colour);
        }
        for &(s, m, _, _) in curve {
            c.rect(
                (sx(s) - 2.0).max(0.0) as usize,
                (sy(m) - 2.0).max(0.0) as usize,
                5,
                5,
                colour,
                1.0,
            );
        }
    }
    for (i, points) in p.points.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        for &(x, v) in points {
            let (cx, cy) = (sx(x), sy(v));
            for k in 0..48 {
                let a = k as f64 / 48.0 * std::f64::consts::TAU;
                let (px, py) = (cx + 6.0 * a.cos(), cy + 6.0 * a.sin());
                c.rect(
                    px.max(0.0) as usize,
                    py.max(0.0) as usize,
                    2,
                    2,
                    colour,
                    1.0,
                );
            }
        }
    }
}

/// A range that holds [lo, hi] with round ends, and its ticks (1, 2 or 5 times a power of ten).
fn nice_range(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let (a, b) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    let b = if b > a { b } else { a + step };
    let n = ((b - a) / step).round() as usize;
    (a, b, (0..=n).map(|i| a + i as f64 * step).collect())
}

fn tick_label(v: f64) -> String {
    if v.abs() >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// About five round steps between the first and last evaluation.
fn step_ticks(lo: i64, hi: i64) -> Vec<i64> {
    let (_, _, ticks) = nice_range(lo as f64, hi as f64);
    ticks
        .into_iter()
        .map(|t| t.round() as i64)
        .filter(|t| (lo..=hi).contains(t))
        .collect()
}

/// White RGB pixels, row by row.
struct Canvas {
    w: usize,
    h: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            pixels: vec![255; w * h * 3],
        }
    }

    /// Blends `colour` over the pixel at `alpha` (0..1).
    fn put(&mut self, x: usize, y: usize, colour: [u8; 3], alpha: f64) {
        if x >= self.w || y >= self.h {
            return;
        }
        let i = (y * self.w + x) * 3;
        for (k, c) in colour.iter().enumerate() {
            let old = self.pixels[i + k] as f64;
            self.pixels[i + k] = (old + alpha * (*c as f64 - old)).round() as u8;
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: [u8; 3], alpha: f64) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, colour, alpha);
            }
        }
    }

    /// A line two pixels thick.
    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, colour: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            self.rect(x.max(0.0) as usize, y.max(0.0) as usize, 2, 2, colour, 1.0);
        }
    }

    /// The area between two segments over [xa, xb]: `lo` and `hi` are their ends' y at xa and xb
    /// (screen y, so "lo" may lie below "hi" on the screen).
    fn band(&mut self, xa: f64, xb: f64, lo: [f64; 2], hi: [f64; 2], colour: [u8; 3]) {
        let (xa_i, xb_i) = (xa.round() as usize, xb.round() as usize);
        for x in xa_i..=xb_i {
            let t = if xb > xa {
                (x as f64 - xa) / (xb - xa)
            } else {
                0.0
            };
            let t = t.clamp(0.0, 1.0);
            let (y0, y1) = (lo[0] + t * (lo[1] - lo[0]), hi[0] + t * (hi[1] - hi[0]));
            let (top, bottom) = (y0.min(y1).round() as usize, y0.max(y1).round() as usize);
            for y in top..=bottom {
                self.put(x, y, colour, 0.18);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, text: &str, scale: i64, colour: [u8; 3]) {
        let mask = font::render(text, scale);
        let (h, w) = (mask.size()[0] as usize, mask.size()[1] as usize);
        let bits = Vec::<u8>::try_from(&mask.flatten(0, -1)).unwrap_or_default();
        for yy in 0..h {
            for xx in 0..w {
                if bits.get(yy * w + xx) == Some(&1) {
                    self.put(x + xx, y + yy, colour, 1.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_round_and_hold_the_data() {
        let (a, b, t) = nice_range(23.4, 87.9);
        assert_eq!((a, b), (20.0, 100.0));
        assert_eq!(t, [20.0, 40.0, 60.0, 80.0, 100.0]);
        let (a, b, _) = nice_range(5.5, 5.5);
        assert!(a <= 5.5 && b >= 5.5 && b > a);
        assert_eq!(step_ticks(250, 1000), [400, 600, 800, 1000]);
    }

    #[test]
    fn the_figure_has_every_arm_colour() {
        let dir = std::env::temp_dir().join(format!("sagan-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.png");
        let curve = |off: f64| {
            vec![
                (250, 50.0 + off, 45.0 + off, 55.0 + off),
                (500, 30.0 + off, 28.0 + off, 33.0 + off),
            ]
        };
        // The third colour has only a measured point, outside the curves' range.
        let panels = [Panel {
            title: "FID".into(),
            x_label: "STEP".into(),
            curves: vec![curve(0.0), curve(20.0)],
            points: vec![vec![], vec![], vec![(400, 5.0)]],
        }];
        // No legend entry for it either.
        write(&path, &panels, &["a".into(), "b".into()]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        for colour in &PALETTE[..3] {
            assert!(
                img.pixels().any(|p| p.0 == *colour),
                "no pixel of {colour:?}"
            );
        }
        assert!(!img.pixels().any(|p| p.0 == PALETTE[3]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
