//! Relay connections: `first` is 0..=100 (default 20), cursors are opaque strings.

use async_graphql::SimpleObject;

use crate::error::ApiError;

pub const MAX_PAGE: i32 = 100;

#[derive(SimpleObject)]
pub struct TotalCount {
    pub total_count: i64,
}

pub fn page_size(first: i32) -> Result<u32, ApiError> {
    if (0..=MAX_PAGE).contains(&first) {
        Ok(first as u32)
    } else {
        Err(ApiError::BadInput(format!(
            "first must be between 0 and {MAX_PAGE}"
        )))
    }
}

/// A page costs what one of its items costs, times the items asked for (capped at
/// MAX_PAGE, beyond which `page_size` refuses anyway), so nested connections multiply.
pub fn page_complexity(first: i32, child_complexity: usize) -> usize {
    1 + first.clamp(0, MAX_PAGE) as usize * child_complexity
}
