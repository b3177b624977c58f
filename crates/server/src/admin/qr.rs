//! QR codes of short links, for print and SMS campaigns.
use qrcode::{EcLevel, QrCode};

/// Modules of white border around the code (the QR specification asks for four).
const QUIET: usize = 4;
/// Pixels per module in the PNG unless a size is asked for.
const SCALE: usize = 8;
/// The image sizes a request may ask for, in pixels: from a thumbnail to a poster.
pub(crate) const SIZES: std::ops::RangeInclusive<usize> = 64..=4096;

fn encode(url: &str) -> Result<QrCode, String> {
    // Level M recovers from ~15% damage: enough for print, keeps short links small.
    QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M).map_err(|e| e.to_string())
}

/// An SVG image of `url`, `size` pixels wide (256 if `None`).
pub(crate) fn svg(url: &str, size: Option<usize>) -> Result<String, String> {
    let code = encode(url)?;
    let size = size.unwrap_or(256) as u32;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(size, size)
        .quiet_zone(true)
        .build())
}

/// A black-and-white PNG of `url`: `SCALE` pixels per module, or as many whole pixels per
/// module as come closest to `size` pixels wide (a module split over pixels prints blurred).
pub(crate) fn png(url: &str, size: Option<usize>) -> Result<Vec<u8>, String> {
    let code = encode(url)?;
    let width = code.width();
    let modules = width + 2 * QUIET;
    let scale = size.map_or(SCALE, |s| ((s + modules / 2) / modules).max(1));
    let size = modules * scale;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; size * size];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = ((i % width + QUIET) * scale, (i / width + QUIET) * scale);
            for row in y..y + scale {
                pixels[row * size + x..row * size + x + scale].fill(0);
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
        let s = svg(url, None).expect("svg");
        assert!(s.contains("<svg") && s.contains("</svg>"));
        let p = png(url, None).expect("png");
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR width: (modules + quiet zone) * scale, for a version-2 code (25 modules).
        let width = u32::from_be_bytes([p[16], p[17], p[18], p[19]]) as usize;
        assert_eq!(width % SCALE, 0);
        assert_eq!(
            width / SCALE - 2 * QUIET,
            encode(url).expect("code").width()
        );
        assert_eq!(decode(&p), url);
        // A size asked for: whole pixels per module, as close as they come.
        let big = png(url, Some(1024)).expect("png");
        let width = u32::from_be_bytes([big[16], big[17], big[18], big[19]]) as usize;
        assert!((1000..=1050).contains(&width), "{width}");
        assert_eq!(decode(&big), url);
        let big = svg(url, Some(1024)).expect("svg");
        let width: usize = big
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .expect("an SVG width");
        assert!((1024..1100).contains(&width), "{width}");
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
