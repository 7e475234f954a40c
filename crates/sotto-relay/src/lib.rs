//! sotto-relay: the untrusted SFU (issue 6). Placeholder.
