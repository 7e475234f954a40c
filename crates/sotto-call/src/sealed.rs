//! Placeholder: filled in by the call-core work (issue 5).
