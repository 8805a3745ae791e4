//! Why the hub refused a request; mapped to HTTP by `http::error`.

use crate::broker::BrokerError;
use crate::envelope::ValidationError;

/// Most events in one publish call.
pub const MAX_BATCH: usize = 1000;

/// Why the hub refused a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// An event failed validation (`index` is its position in a batch).
    #[error("{}{error}", index.map(|i| format!("item {i}: ")).unwrap_or_default())]
    Invalid {
        /// Position in the batch, if the request was a batch.
        index: Option<usize>,
        /// What was wrong.
        error: ValidationError,
    },
    /// The batch was empty.
    #[error("the batch is empty")]
    EmptyBatch,
    /// The batch had more than [`MAX_BATCH`] events.
    #[error("a batch holds at most {MAX_BATCH} events, got {0}")]
    BatchTooLarge(usize),
    /// The backend cannot take or serve events now.
    #[error("{0}")]
    Backend(#[from] BrokerError),
    /// The hub is shutting down.
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// This instance holds its maximum number of connections.
    #[error("this instance holds its maximum of {0} connections")]
    TooManyConnections(usize),
    /// New streams arrive faster than this instance admits them; retry after the delay.
    #[error(
        "this instance admits at most {per_second} new streams per second; retry after {retry_after_secs} s"
    )]
    Paced {
        /// The configured pace.
        per_second: u32,
        /// Jittered seconds for `Retry-After`.
        retry_after_secs: u32,
    },
    /// The org holds its maximum number of connections on this instance.
    #[error("this org holds its maximum of {0} connections on this instance")]
    TooManyConnectionsForOrg(usize),
}
