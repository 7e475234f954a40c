//! Placeholder: the call engine tying signaling, sealed setup and media together (issue 5).
