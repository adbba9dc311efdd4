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
