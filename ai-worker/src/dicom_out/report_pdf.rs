//! The report's one A4 page as a PDF, written with `pdf-writer`: the standard Helvetica fonts
//! (PDF 32000-1 9.6.2.2: every reader has their metrics, nothing is embedded), the key image
//! as a deflated RGB image XObject, the table as text and filled rectangles.

use miniz_oxide::deflate::{compress_to_vec_zlib, CompressionLevel};
use pdf_writer::{Content, Date, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

/// The key image: one source slice, windowed, with each segment tinted and outlined.
#[derive(Debug, Clone)]
pub struct KeyImage {
    pub rows: usize,
    pub columns: usize,
    /// Row spacing, then column spacing (mm): the image keeps the patient's proportions.
    pub pixel_spacing: [f64; 2],
    /// Index of the slice in the source series (volume order).
    pub slice: usize,
    /// Index of the segment chosen for the slice.
    pub largest_segment: usize,
    pub window_center: f64,
    pub window_width: f64,
    /// Source values of the slice, row by row.
    pub pixels: Vec<f32>,
    /// Each segment's display colour and its pixels on the slice.
    pub overlays: Vec<([u8; 3], Vec<bool>)>,
}

/// One row of the measurement table.
#[derive(Debug, Clone)]
pub struct Row {
    pub color: [u8; 3],
    pub cells: Vec<String>,
}

/// Everything on the page.
#[derive(Debug, Clone)]
pub struct Page {
    pub title: String,
    pub lines: Vec<String>,
    pub caption: String,
    pub header: Vec<String>,
    pub header_units: Vec<String>,
    pub rows: Vec<Row>,
    pub key: KeyImage,
    pub footer: String,
}

/// How strongly a segment's colour tints the pixels inside it.
const TINT: f64 = 0.35;
/// The key image is drawn at this many PDF points at most, each way.
const IMAGE_BOX: f32 = 300.0;
/// Left margin, and x of each table column (points).
const LEFT: f32 = 50.0;
const COLUMNS: [f32; 8] = [50.0, 170.0, 225.0, 280.0, 335.0, 395.0, 445.0, 500.0];

impl KeyImage {
    /// The slice magnified `scale` times (nearest neighbour), grey by the window (PS3.3
    /// C.11.2.1.2.1, linear), each segment tinted inside and drawn in full colour along its
    /// border (`line` magnified pixels wide); RGB, row by row.
    pub fn rgb(&self, scale: usize, line: usize) -> Vec<u8> {
        let (w, h) = (self.columns * scale, self.rows * scale);
        let (c, ww) = (self.window_center - 0.5, self.window_width - 1.0);
        let grey = |v: f32| -> f64 {
            let v = f64::from(v);
            if ww <= 0.0 {
                return if v > c { 255.0 } else { 0.0 };
            }
            (((v - c) / ww + 0.5).clamp(0.0, 1.0)) * 255.0
        };
        let inside = |mask: &[bool], y: isize, x: isize| {
            y >= 0
                && x >= 0
                && (y as usize) < h
                && (x as usize) < w
                && mask[(y as usize / scale) * self.columns + x as usize / scale]
        };
        let line = line.max(1) as isize;
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let g = grey(self.pixels[(y / scale) * self.columns + x / scale]);
                let mut px = [g, g, g];
                for (color, mask) in &self.overlays {
                    let (yi, xi) = (y as isize, x as isize);
                    if !inside(mask, yi, xi) {
                        continue;
                    }
                    let border = (1..=line).any(|d| {
                        !inside(mask, yi - d, xi)
                            || !inside(mask, yi + d, xi)
                            || !inside(mask, yi, xi - d)
                            || !inside(mask, yi, xi + d)
                    });
                    for k in 0..3 {
                        let c = f64::from(color[k]);
                        px[k] = if border {
                            c
                        } else {
                            px[k] * (1.0 - TINT) + c * TINT
                        };
                    }
                }
                out.extend(px.map(|v| v.round() as u8));
            }
        }
        out
    }
}

/// Text in the fonts' WinAnsiEncoding (PDF 32000-1 D.2): Latin-1 as is, anything else "?".
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c as u32 {
            0x20..=0x7e | 0xa0..=0xff => c as u32 as u8,
            _ => b'?',
        })
        .collect()
}

/// Cuts `s` to `max` characters, marking the cut.
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

fn rgb(color: [u8; 3]) -> (f32, f32, f32) {
    let f = |v: u8| f32::from(v) / 255.0;
    (f(color[0]), f(color[1]), f(color[2]))
}

const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");
const IMAGE: Name<'static> = Name(b"Im1");

/// Writes `text` at (`x`, `y`) in `font` of `size` points.
fn text(content: &mut Content, font: Name, size: f32, x: f32, y: f32, text: &str) {
    let bytes = win_ansi(text);
    content
        .begin_text()
        .set_font(font, size)
        .next_line(x, y)
        .show(Str(&bytes))
        .end_text();
}

fn swatch(content: &mut Content, color: [u8; 3], x: f32, y: f32, size: f32) {
    let (r, g, b) = rgb(color);
    content
        .save_state()
        .set_fill_rgb(r, g, b)
        .rect(x, y, size, size)
        .fill_nonzero()
        .restore_state();
}

/// The PDF document of `page`.
pub fn render(page: &Page) -> Vec<u8> {
    let catalog = Ref::new(1);
    let pages = Ref::new(2);
    let page_id = Ref::new(3);
    let regular = Ref::new(4);
    let bold = Ref::new(5);
    let image = Ref::new(6);
    let contents = Ref::new(7);
    let info = Ref::new(8);
    let (width, height) = (595.0_f32, 842.0_f32);

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page_id]).count(1);
    {
        let mut p = pdf.page(page_id);
        p.parent(pages)
            .media_box(Rect::new(0.0, 0.0, width, height))
            .contents(contents);
        let mut resources = p.resources();
        resources.fonts().pair(REGULAR, regular).pair(BOLD, bold);
        resources.x_objects().pair(IMAGE, image);
        resources.finish();
        p.finish();
    }
    for (id, name) in [(regular, &b"Helvetica"[..]), (bold, &b"Helvetica-Bold"[..])] {
        pdf.type1_font(id)
            .base_font(Name(name))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }

    // The key image, magnified to at least ~300 pixels for crisp outlines.
    let key = &page.key;
    let largest = key.rows.max(key.columns).max(1);
    let scale = 300usize.div_ceil(largest).clamp(1, 8);
    let samples = key.rgb(scale, scale.div_ceil(3));
    let encoded = compress_to_vec_zlib(&samples, CompressionLevel::DefaultLevel as u8);
    {
        let mut x = pdf.image_xobject(image, &encoded);
        x.filter(Filter::FlateDecode);
        x.width((key.columns * scale) as i32);
        x.height((key.rows * scale) as i32);
        x.color_space().device_rgb();
        x.bits_per_component(8);
        x.finish();
    }

    let mut c = Content::new();
    let mut y = height - 52.0;
    text(&mut c, BOLD, 16.0, LEFT, y, &page.title);
    y -= 22.0;
    for line in &page.lines {
        text(&mut c, REGULAR, 9.5, LEFT, y, &fit(line, 110));
        y -= 14.0;
    }

    // Image in the patient's proportions, fitted into IMAGE_BOX x IMAGE_BOX.
    let (w_mm, h_mm) = (
        key.columns as f64 * key.pixel_spacing[1],
        key.rows as f64 * key.pixel_spacing[0],
    );
    let fit_scale = f64::from(IMAGE_BOX) / w_mm.max(h_mm).max(1e-6);
    let (iw, ih) = ((w_mm * fit_scale) as f32, (h_mm * fit_scale) as f32);
    let top = y - 6.0;
    c.save_state()
        .transform([iw, 0.0, 0.0, ih, LEFT, top - ih])
        .x_object(IMAGE)
        .restore_state();
    // Legend beside the image.
    let mut ly = top - 12.0;
    text(&mut c, BOLD, 9.0, LEFT + IMAGE_BOX + 20.0, ly, "Segments");
    for row in &page.rows {
        ly -= 14.0;
        if ly < top - IMAGE_BOX {
            break;
        }
        swatch(&mut c, row.color, LEFT + IMAGE_BOX + 20.0, ly - 1.0, 8.0);
        text(
            &mut c,
            REGULAR,
            9.0,
            LEFT + IMAGE_BOX + 34.0,
            ly,
            &fit(&row.cells[0], 30),
        );
    }
    y = top - ih - 14.0;
    text(&mut c, REGULAR, 8.0, LEFT, y, &fit(&page.caption, 125));

    // The table.
    y -= 28.0;
    for (cells, dy) in [(&page.header, 0.0), (&page.header_units, 10.0)] {
        for (x, cell) in COLUMNS.iter().zip(cells.iter()) {
            if !cell.is_empty() {
                text(&mut c, BOLD, 8.5, *x, y - dy, cell);
            }
        }
    }
    y -= 15.0;
    c.set_line_width(0.5)
        .move_to(LEFT, y)
        .line_to(width - LEFT, y)
        .stroke();
    let bottom = 80.0;
    for (i, row) in page.rows.iter().enumerate() {
        y -= 13.0;
        if y < bottom {
            let more = page.rows.len() - i;
            text(
                &mut c,
                REGULAR,
                8.5,
                LEFT,
                y,
                &format!("{more} more segment(s): see the TID 1500 report"),
            );
            break;
        }
        swatch(&mut c, row.color, COLUMNS[0], y - 0.5, 7.0);
        for (k, (x, cell)) in COLUMNS.iter().zip(&row.cells).enumerate() {
            let (x, cell) = if k == 0 {
                (x + 11.0, fit(cell, 22))
            } else {
                (*x, cell.clone())
            };
            text(&mut c, REGULAR, 8.5, x, y, &cell);
        }
    }
    text(&mut c, REGULAR, 8.0, LEFT, 50.0, &fit(&page.footer, 125));
    pdf.stream(contents, &c.finish());

    let now = chrono::Local::now();
    use chrono::{Datelike, Timelike};
    let date = Date::new(now.year().clamp(0, 9999) as u16)
        .month(now.month() as u8)
        .day(now.day() as u8)
        .hour(now.hour() as u8)
        .minute(now.minute() as u8)
        .second(now.second() as u8);
    pdf.document_info(info)
        .title(TextStr(&page.title))
        .creator(TextStr("pacs-ai-worker"))
        .producer(TextStr("pdf-writer"))
        .creation_date(date);
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(overlay: Vec<bool>) -> KeyImage {
        KeyImage {
            rows: 3,
            columns: 3,
            pixel_spacing: [1.0, 1.0],
            slice: 0,
            largest_segment: 0,
            window_center: 50.0,
            window_width: 100.0,
            pixels: vec![0.0, 50.0, 100.0, 0.0, 50.0, 100.0, 0.0, 50.0, 100.0],
            overlays: vec![([255, 0, 0], overlay)],
        }
    }

    #[test]
    fn key_image_is_windowed_tinted_and_outlined() {
        let plain = key(vec![false; 9]).rgb(1, 1);
        assert_eq!(&plain[0..3], &[0, 0, 0]);
        assert_eq!(&plain[6..9], &[255, 255, 255]);
        assert!((126..=129).contains(&plain[3]));

        // a 3x3 segment magnified 3 times: its centre tinted, its border pure red
        let magnified = key(vec![true; 9]).rgb(3, 1);
        let at = |y: usize, x: usize| &magnified[(y * 9 + x) * 3..(y * 9 + x) * 3 + 3];
        assert_eq!(at(0, 0), &[255, 0, 0]);
        let centre = at(4, 4);
        assert!(
            centre[0] > centre[1] && centre[1] == centre[2] && centre[1] > 0,
            "{centre:?}"
        );
    }

    #[test]
    fn text_outside_latin1_is_replaced() {
        assert_eq!(win_ansi("Müller µ 脳"), b"M\xfcller \xb5 ?".to_vec());
        assert_eq!(fit("abcdefgh", 6), "abc...");
    }
}
