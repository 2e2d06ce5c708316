//! OpenAI and Azure OpenAI wire types, with no I/O.
//!
//! The gateway forwards request and response bytes as they are wherever it can; this crate gives it
//! the few views it needs into them: the request head (model, stream flags, limits) with a cheap
//! rewrite, the `usage` object of responses and stream chunks, an incremental server-sent-events
//! splitter, and OpenAI's error body. Beside OpenAI's Chat Completions it knows OpenAI's Responses
//! API ([`responses`]) and Anthropic's Messages API ([`anthropic`]): their request heads, and
//! translators between them and Chat Completions (requests, plain responses, and streams as
//! incremental state machines fed one upstream event at a time).

pub mod anthropic;
pub mod error;
pub mod out;
pub mod prompt;
pub mod request;
pub mod responses;
pub mod sse;
pub mod usage;

pub use error::{ErrorBody, ErrorDetail};
pub use request::{ApiRequest, Endpoint, RequestError, Restrict};
pub use sse::{SseEvent, SseSplitter};
pub use usage::Usage;
