//! A tiny built-in 5x7 bitmap font for the row labels of sample grids (a font library would be a
//! heavy dependency for a dozen words).
use tch::{Device, Kind, Tensor};

const GLYPH_W: i64 = 5;
const GLYPH_H: i64 = 7;

/// A character's 5x7 bitmap, one byte per row, bit 4 the leftmost pixel. Letters are drawn as
/// capitals; characters the font lacks as '?'.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'B' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
        ],
        'C' => [
            0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        'D' => [
            0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110,
        ],
        'E' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
        ],
        'F' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'G' => [
            0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111,
        ],
        'H' => [
            0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'I' => [
            0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'J' => [
            0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
        'K' => [
            0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001,
        ],
        'L' => [
            0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111,
        ],
        'M' => [
            0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001,
        ],
        'N' => [
            0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001,
        ],
        'O' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'P' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'Q' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101,
        ],
        'R' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001,
        ],
        'S' => [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        'T' => [
            0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
        'U' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'V' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
        ],
        'W' => [
            0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
        ],
        'X' => [
            0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001,
        ],
        'Y' => [
            0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100,
        ],
        'Z' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111,
        ],
        '0' => [
            0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
        ],
        '1' => [
            0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        '2' => [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
        '3' => [
            0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
        ],
        '4' => [
            0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
        ],
        '5' => [
            0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
        ],
        '6' => [
            0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
        ],
        '7' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
        ],
        '8' => [
            0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
        ],
        '9' => [
            0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
        ],
        ' ' => [0; 7],
        '-' => [0, 0, 0, 0b11111, 0, 0, 0],
        '/' => [0, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0],
        '.' => [0, 0, 0, 0, 0, 0b01100, 0b01100],
        ':' => [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0],
        '+' => [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0],
        '=' => [0, 0, 0b11111, 0, 0b11111, 0, 0],
        ',' => [0, 0, 0, 0, 0b01100, 0b00100, 0b01000],
        '(' => [
            0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010,
        ],
        ')' => [
            0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000,
        ],
        '%' => [
            0b11001, 0b11010, 0b00010, 0b00100, 0b01000, 0b01011, 0b10011,
        ],
        '_' => [0, 0, 0, 0, 0, 0, 0b11111],
        _ => [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0, 0b00100],
    }
}

/// `text` as a (7 * scale, 6 * scale * len) mask of 0 and 1 (u8): glyphs one pixel apart, each
/// pixel a scale x scale square.
pub fn render(text: &str, scale: i64) -> Tensor {
    let chars: Vec<char> = text.chars().collect();
    let (h, w) = (GLYPH_H, (GLYPH_W + 1) * chars.len() as i64);
    let mut pixels = vec![0u8; (h * w) as usize];
    for (i, &c) in chars.iter().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits >> (GLYPH_W - 1 - col) & 1 == 1 {
                    let x = i as i64 * (GLYPH_W + 1) + col;
                    pixels[(row as i64 * w + x) as usize] = 1;
                }
            }
        }
    }
    Tensor::from_slice(&pixels)
        .view([h, w])
        .repeat_interleave_self_int(scale, 0, None)
        .repeat_interleave_self_int(scale, 1, None)
}

/// Text scale for rows `row_height` pixels tall: glyphs about half the row, 1x to 4x.
pub fn scale_for(row_height: i64) -> i64 {
    (row_height / 16).clamp(1, 4)
}

/// A (3, rows * row_height, width) uint8 column of white labels on black, one per row, each
/// centred vertically in its row and indented by one glyph pixel.
pub fn label_column(labels: &[String], row_height: i64) -> Tensor {
    let scale = scale_for(row_height);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as i64;
    let width = (GLYPH_W + 1) * scale * longest + 2 * scale;
    let rows = labels.len() as i64;
    let column = Tensor::zeros([rows * row_height, width], (Kind::Uint8, Device::Cpu));
    for (r, label) in labels.iter().enumerate() {
        let text = render(label, scale);
        let (th, tw) = text.size2().expect("2-d mask");
        let top = r as i64 * row_height + (row_height - th).max(0) / 2;
        let th = th.min(row_height);
        column
            .narrow(0, top, th)
            .narrow(1, scale, tw)
            .copy_(&(text.narrow(0, 0, th) * 255));
    }
    column.unsqueeze(0).repeat([3, 1, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_land_where_the_bitmap_says() {
        let t = render("T-", 1);
        assert_eq!(t.size(), vec![7, 12]);
        // T: the top row full, then the middle column.
        let top: Vec<u8> = Vec::try_from(&t.get(0).narrow(0, 0, 5)).unwrap();
        assert_eq!(top, vec![1, 1, 1, 1, 1]);
        assert_eq!(t.int64_value(&[3, 2]), 1);
        assert_eq!(t.int64_value(&[3, 0]), 0);
        // The gap column between glyphs is empty; '-' is the middle row of the second glyph.
        assert_eq!(t.narrow(1, 5, 1).sum(Kind::Int64).int64_value(&[]), 0);
        let dash: Vec<u8> = Vec::try_from(&t.get(3).narrow(0, 6, 5)).unwrap();
        assert_eq!(dash, vec![1, 1, 1, 1, 1]);
        assert!(render("a", 1).equal(&render("A", 1)));
        let big = render("A", 3);
        assert_eq!(big.size(), vec![21, 18]);
    }

    #[test]
    fn each_label_sits_in_its_own_row() {
        let labels = vec!["Bag".to_string(), "1".to_string()];
        let col = label_column(&labels, 34);
        let scale = scale_for(34);
        assert_eq!(
            col.size(),
            vec![3, 68, (GLYPH_W + 1) * scale * 3 + 2 * scale]
        );
        let row0 = col.get(0).narrow(0, 0, 34);
        let row1 = col.get(0).narrow(0, 34, 34);
        let lit = |t: &Tensor| t.gt(0).sum(Kind::Int64).int64_value(&[]);
        assert!(lit(&row0) > 0 && lit(&row1) > 0);
        // "1" is narrower than "Bag": its row lights fewer pixels.
        assert!(lit(&row1) < lit(&row0));
        assert_eq!(lit(&row0), lit(&render("Bag", scale)));
    }
}
