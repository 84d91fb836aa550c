//! QR codes of Instant Key links, as SVG (for pages and the API) and PNG (for messages).

use keygate_domain::Error;
use qrcode::QrCode;
use qrcode::render::svg;

fn code(data: &str) -> Result<QrCode, Error> {
    QrCode::new(data.as_bytes()).map_err(|e| Error::Internal {
        message: format!("QR code: {e}"),
    })
}

/// The QR code of `data` as a standalone SVG document.
pub fn svg(data: &str) -> Result<String, Error> {
    Ok(code(data)?
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build())
}

/// The QR code of `data` as a PNG image.
pub fn png(data: &str) -> Result<Vec<u8>, Error> {
    let img = code(data)?
        .render::<image::Luma<u8>>()
        .min_dimensions(240, 240)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::Internal {
            message: format!("PNG: {e}"),
        })?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_svg_and_png() {
        let url = "https://keys.example.com/ik/abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let svg = super::svg(url).expect("svg");
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
        let png = super::png(url).expect("png");
        assert_eq!(&png[1..4], b"PNG");
    }
}
