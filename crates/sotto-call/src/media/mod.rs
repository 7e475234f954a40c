//! Placeholder: filled in by the media work (issue 5).
