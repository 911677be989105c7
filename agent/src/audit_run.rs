//! The one audit entry (placeholder while moving)
