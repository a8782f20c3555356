//! The SVG of a flame graph: one `<g>` per frame (a `<title>` for hover, a `<rect>` whose
//! width is the frame's share of the total, a `<text>` label that fits it), the root at the
//! bottom, children in name order, and the script of `flame.js` for zoom and search.
//!
//! Widths: a frame of value `v` in a graph of total `T` is `v / T * (width - 2 * PAD)` pixels
//! wide, written with two decimals. Frames narrower than [`MIN_WIDTH`] pixels are left out
//! with everything above them (they could not be seen or clicked, and would only swell the
//! file); the hover title of their parent still counts them.

use std::fmt::Write;

use super::tree::{Side, Tree, ROOT};
use crate::top::format_value;

pub const PAD: f64 = 10.0;
pub const FRAME_HEIGHT: f64 = 16.0;
const HEADER: f64 = 56.0;
const FOOTER: f64 = 28.0;
const FONT_SIZE: f64 = 12.0;
/// Average glyph width of the label font, to cut labels to what fits.
const CHAR_WIDTH: f64 = FONT_SIZE * 0.59;
pub const MIN_WIDTH: f64 = 0.1;

const SCRIPT: &str = include_str!("flame.js");

pub struct Render<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
    pub unit: &'a str,
    pub width: u32,
    /// A differential graph: the factor the baseline's values are multiplied by before they
    /// are compared (1 unless normalised to the same total).
    pub diff: Option<f64>,
}

/// One frame as laid out.
struct Frame {
    node: usize,
    depth: usize,
    x: f64,
    w: f64,
}

fn layout(tree: &Tree, width: f64) -> Vec<Frame> {
    let total = tree.total(Side::Main).max(1) as f64;
    let scale = (width - 2.0 * PAD) / total;
    let mut out = Vec::new();
    // (node, depth, value offset from the left edge); children pushed in reverse so they
    // are visited in name order.
    let mut todo = vec![(ROOT, 0usize, 0i64)];
    while let Some((node, depth, off)) = todo.pop() {
        let v = tree.nodes[node].value[Side::Main as usize];
        let w = v as f64 * scale;
        if v <= 0 || w < MIN_WIDTH {
            continue;
        }
        out.push(Frame {
            node,
            depth,
            x: PAD + off as f64 * scale,
            w,
        });
        let mut at = off;
        let mut kids = Vec::with_capacity(tree.nodes[node].children.len());
        for &c in &tree.nodes[node].children {
            kids.push((c, depth + 1, at));
            at = at.saturating_add(tree.nodes[c].value[Side::Main as usize].max(0));
        }
        todo.extend(kids.into_iter().rev());
    }
    out
}

/// `v` in `unit`, for titles: scaled time and bytes, plain counts.
pub fn amount(v: i64, unit: &str) -> String {
    match unit {
        "nanoseconds" | "microseconds" | "milliseconds" | "bytes" => format_value(v, unit),
        "count" | "" => v.to_string(),
        other => format!("{v} {other}"),
    }
}

fn pct(part: f64, total: f64) -> f64 {
    if total == 0.0 {
        0.0
    } else {
        part * 100.0 / total
    }
}

/// A stable warm colour per function name, so a function keeps its colour across graphs.
fn warm(name: &str) -> (u8, u8, u8) {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    let part = |shift: u32| ((h >> shift) & 0xff) as f64 / 255.0;
    (
        (205.0 + 50.0 * part(0)) as u8,
        (230.0 * part(8)) as u8,
        (55.0 * part(16)) as u8,
    )
}

/// Red for growth, blue for shrinkage, grey for no change; the stronger the larger the
/// change relative to the largest one in the graph.
pub fn diff_colour(delta: f64, max_abs: f64) -> (u8, u8, u8) {
    const NEUTRAL: u8 = 221;
    if delta.abs() < 0.5 || max_abs <= 0.0 {
        return (NEUTRAL, NEUTRAL, NEUTRAL);
    }
    let i = (delta.abs() / max_abs).min(1.0);
    let c = (NEUTRAL as f64 - 200.0 * i) as u8;
    if delta > 0.0 {
        (255, c, c)
    } else {
        (c, c, 255)
    }
}

fn luma(r: u8, g: u8, b: u8) -> f64 {
    0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64
}

/// Text for XML: markup escaped, and the characters XML 1.0 forbids (most C0 controls, which
/// a hostile profile's names may hold) replaced.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// The label that fits `w` pixels: the name, cut with `..`, or nothing under 3 characters.
fn label(name: &str, w: f64) -> String {
    let fits = ((w - 6.0) / CHAR_WIDTH).floor();
    if fits < 3.0 {
        return String::new();
    }
    let fits = fits as usize;
    if name.chars().count() <= fits {
        return name.to_string();
    }
    let mut s: String = name.chars().take(fits - 2).collect();
    s.push_str("..");
    s
}

/// The SVG and the number of frames drawn.
pub fn render(tree: &Tree, r: &Render) -> (String, usize) {
    let width = r.width as f64;
    let frames = layout(tree, width);
    let max_depth = frames.iter().map(|f| f.depth).max().unwrap_or(0);
    let height = HEADER + (max_depth + 1) as f64 * FRAME_HEIGHT + FOOTER;
    let bottom = height - FOOTER;
    let total = tree.total(Side::Main) as f64;
    let k = r.diff.unwrap_or(1.0);
    let base_total = tree.total(Side::Base) as f64 * k;
    let delta = |n: usize| {
        let v = tree.nodes[n].value;
        v[0] as f64 - v[1] as f64 * k
    };
    // The root's change is the total's: it would wash out every frame's colour.
    let max_abs = frames
        .iter()
        .filter(|f| f.node != ROOT)
        .map(|f| delta(f.node).abs())
        .fold(0.0, f64::max);

    let mut s = String::with_capacity(256 * frames.len() + SCRIPT.len() + 4096);
    let _ = write!(
        s,
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" onload="init(evt)">
<defs><linearGradient id="bg" x1="0" y1="0" x2="0" y2="1"><stop stop-color="{top}" offset="5%"/><stop stop-color="{low}" offset="95%"/></linearGradient></defs>
<style type="text/css">
text {{ font-family: Verdana, sans-serif; font-size: {FONT_SIZE}px; fill: rgb(0,0,0); }}
#title {{ text-anchor: middle; font-size: 17px; }}
#subtitle {{ text-anchor: middle; fill: rgb(80,80,80); }}
#search, #matched {{ text-anchor: end; }}
#search, #unzoom {{ cursor: pointer; }}
#frames > g {{ cursor: pointer; }}
#frames > g:hover > rect {{ stroke: rgb(0,0,0); stroke-width: 0.5; }}
.hide {{ display: none; }}
.parent {{ opacity: 0.5; }}
text.light {{ fill: rgb(255,255,255); }}
</style>
<script type="text/ecmascript"><![CDATA[
{SCRIPT}
var fg_config = {{ pad: {PAD}, frameHeight: {FRAME_HEIGHT}, width: {width}, charWidth: {CHAR_WIDTH:.3}, bottom: {bottom} }};
]]></script>
<rect x="0" y="0" width="{width}" height="{height}" fill="url(#bg)"/>
"#,
        top = if r.diff.is_some() {
            "rgb(250,250,250)"
        } else {
            "rgb(238,238,238)"
        },
        low = if r.diff.is_some() {
            "rgb(235,235,245)"
        } else {
            "rgb(238,238,176)"
        },
    );
    let mid = width / 2.0;
    s += &format!(r#"<text id="title" x="{mid}" y="22">"#);
    escape(r.title, &mut s);
    s += &format!("</text>\n<text id=\"subtitle\" x=\"{mid}\" y=\"40\">");
    escape(r.subtitle, &mut s);
    s += "</text>\n";
    let _ = writeln!(
        s,
        r#"<text id="unzoom" class="hide" x="{PAD}" y="22">Reset Zoom</text>
<text id="search" x="{right}" y="22">Search</text>
<text id="details" x="{PAD}" y="{footer}"> </text>
<text id="matched" x="{right}" y="{footer}"> </text>
<g id="frames">"#,
        right = width - PAD,
        footer = height - 10.0,
    );

    for f in &frames {
        let node = &tree.nodes[f.node];
        let name = tree.name(f.node);
        let main = node.value[0];
        let (red, green, blue) = match r.diff {
            Some(_) if f.node == ROOT => diff_colour(0.0, 0.0),
            Some(_) => diff_colour(delta(f.node), max_abs),
            None => warm(name),
        };
        s += "<g><title>";
        escape(name, &mut s);
        s.push('\n');
        match r.diff {
            None => {
                let child_sum: i64 = node.children.iter().map(|&c| tree.nodes[c].value[0]).sum();
                let _ = write!(
                    s,
                    "{} ({:.2}%), self {}",
                    amount(main, r.unit),
                    pct(main as f64, total),
                    amount(main.saturating_sub(child_sum), r.unit)
                );
            }
            Some(_) => {
                let before = (node.value[1] as f64 * k).round() as i64;
                let d = delta(f.node).round() as i64;
                let change = if d == 0 {
                    "no change".to_string()
                } else {
                    let sign = if d > 0 { "+" } else { "" };
                    format!(
                        "{sign}{}, {:+.2} points of the total",
                        amount(d, r.unit),
                        pct(main as f64, total) - pct(before as f64, base_total)
                    )
                };
                let _ = write!(
                    s,
                    "after {} ({:.2}%), before {} ({:.2}%): {change}",
                    amount(main, r.unit),
                    pct(main as f64, total),
                    amount(before, r.unit),
                    pct(before as f64, base_total),
                );
            }
        }
        let y = bottom - (f.depth + 1) as f64 * FRAME_HEIGHT;
        let _ = write!(
            s,
            r#"</title><rect x="{:.2}" y="{y}" width="{:.2}" height="{}" fill="rgb({red},{green},{blue})" rx="2" ry="2"/><text x="{:.2}" y="{}"{}>"#,
            f.x,
            f.w,
            FRAME_HEIGHT - 1.0,
            f.x + 3.0,
            y + FRAME_HEIGHT - 4.5,
            // Black on the darkest diff colours would not read.
            if luma(red, green, blue) < 110.0 {
                r#" class="light""#
            } else {
                ""
            },
        );
        escape(&label(name, f.w), &mut s);
        s += "</text></g>\n";
    }
    s += "</g>\n</svg>\n";
    (s, frames.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_cannot_close_its_cdata_section() {
        assert!(!SCRIPT.contains("]]>"));
    }

    #[test]
    fn escaping_keeps_markup_and_forbidden_characters_out() {
        let mut s = String::new();
        escape("a<b>&\"c'\u{1}\u{ffff}\n", &mut s);
        assert_eq!(s, "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}\u{fffd}\n");
    }

    #[test]
    fn labels_fit_their_frame() {
        assert_eq!(label("handle_request", 1000.0), "handle_request");
        let cut = label("handle_request", 60.0);
        assert!(
            cut.ends_with("..") && cut.len() < "handle_request".len(),
            "{cut}"
        );
        assert_eq!(label("handle_request", 20.0), "");
    }

    #[test]
    fn diff_colours_say_which_way() {
        let (r, g, b) = diff_colour(10.0, 10.0);
        assert!(r > g && r > b);
        let (r, g, b) = diff_colour(-10.0, 10.0);
        assert!(b > r && b > g);
        let (r, g, b) = diff_colour(0.0, 10.0);
        assert!(r == g && g == b);
    }
}
