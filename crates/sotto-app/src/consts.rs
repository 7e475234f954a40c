//! Named limits of the call screen's web server and page link.

use std::time::Duration;

/// Largest WebSocket message from the page (an SDP with every candidate fits many times).
pub const MAX_PAGE_MESSAGE: usize = 256 * 1024;

/// How long a page has, once connected, to show the token.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the device waits for the page to answer a media request (getUserMedia may ask
/// the user for permission first).
/// Below the call driver's `MEDIA_OP_TIMEOUT` (10 s), so that the page's own timeout is the one
/// that fires and cleans up.
pub const PAGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Bytes of randomness in the page token (shown as hex in the URL fragment).
pub const TOKEN_BYTES: usize = 32;

/// Messages queued for a page that does not read them; past this the page is disconnected.
pub const MAX_PAGE_BACKLOG: usize = 4096;

/// How long one message to the page may take to go out before the page is disconnected.
pub const PAGE_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The call screen's Content-Security-Policy: only the app's own embedded scripts, workers,
/// styles and WebSocket; no inline script, no frames, no plugins, no third party.
pub const CSP: &str = "default-src 'none'; script-src 'self'; worker-src 'self'; \
    connect-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Most contacts sent to the page in one contacts list (the rest are left out, and the list
/// says so).
pub const MAX_CONTACTS_SENT: usize = 200;

/// How long the device waits for the signaling server to list one contact's devices; past
/// it the contact is shown without a device count.
pub const CONTACT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one refresh of the whole contacts list may take; contacts not looked up by then are
/// shown without a device count.
pub const CONTACTS_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
