//! Reading a response body with a size cap, as it arrives: a larger body is an error before it
//! is all in memory. Every body the server, the client and the guard read from elsewhere goes
//! through here.

use std::fmt;

/// Why a response body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body is larger than the cap it was read with.
    TooLarge {
        /// The cap, in bytes.
        max: usize,
    },
    /// The connection failed (or timed out) while the body was read.
    Network(reqwest::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { max } => write!(f, "the response is larger than {max} bytes"),
            BodyError::Network(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::TooLarge { .. } => None,
            BodyError::Network(error) => Some(error),
        }
    }
}

/// A response body of at most `max` bytes, read as it arrives.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Network)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`read_capped`], for callers that only log why it failed.
pub async fn read_limited(response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    read_capped(response, max).await.map_err(|e| e.to_string())
}
