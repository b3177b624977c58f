//! QR codes of short links, for print and SMS campaigns.
use qrcode::{EcLevel, QrCode};

/// Modules of white border around the code (the QR specification asks for four).
const QUIET: usize = 4;
/// Pixels per module in the PNG.
const SCALE: usize = 8;

fn encode(url: &str) -> Result<QrCode, String> {
    // Level M recovers from ~15% damage: enough for print, keeps short links small.
    QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M).map_err(|e| e.to_string())
}

/// An SVG image of `url`.
pub(crate) fn svg(url: &str) -> Result<String, String> {
    let code = encode(url)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// A black-and-white PNG of `url`, `SCALE` pixels per module.
pub(crate) fn png(url: &str) -> Result<Vec<u8>, String> {
    let code = encode(url)?;
    let width = code.width();
    let size = (width + 2 * QUIET) * SCALE;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; size * size];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = ((i % width + QUIET) * SCALE, (i / width + QUIET) * SCALE);
            for row in y..y + SCALE {
                pixels[row * size + x..row * size + x + SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, size as u32, size as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_have_the_expected_shape() {
        let url = "https://go.example.cn/x7Kp2Qa";
        let s = svg(url).expect("svg");
        assert!(s.contains("<svg") && s.contains("</svg>"));
        let p = png(url).expect("png");
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR width: (modules + quiet zone) * scale, for a version-2 code (25 modules).
        let width = u32::from_be_bytes([p[16], p[17], p[18], p[19]]) as usize;
        assert_eq!(width % SCALE, 0);
        assert_eq!(
            width / SCALE - 2 * QUIET,
            encode(url).expect("code").width()
        );
        assert_eq!(decode(&p), url);
    }

    /// Reads the PNG back with an independent QR decoder.
    fn decode(png_bytes: &[u8]) -> String {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("png frame");
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        grids[0].decode().expect("decodes").1
    }
}
