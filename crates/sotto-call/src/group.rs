//! Placeholder: the group key schedule (issue 6).
