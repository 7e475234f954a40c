//! The call screen's files, embedded in the binary (no CDN, nothing fetched from elsewhere).

/// One embedded file.
pub struct Asset {
    /// URL path.
    pub path: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static str,
}

macro_rules! asset {
    ($path:literal, $ct:literal) => {
        Asset {
            path: concat!("/", $path),
            content_type: $ct,
            body: include_str!(concat!("../web/", $path)),
        }
    };
}

/// Every file the page loads.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.mjs", "text/javascript; charset=utf-8"),
    asset!("frame-worker.mjs", "text/javascript; charset=utf-8"),
    asset!("sframe.mjs", "text/javascript; charset=utf-8"),
];
