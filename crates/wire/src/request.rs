//! The head of a client request, read without copying its values, and the rewrite sent upstream.
//!
//! A request body is kept as a list of top-level fields whose values are raw JSON slices of the
//! client's bytes. The gateway reads the few fields it interprets (model, stream, stream_options,
//! limits) and checks their types; every other field (tools, response_format, logprobs, seed, …)
//! passes to the upstream byte for byte.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::prompt::{self, Key};

/// The inference endpoints of the front door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// OpenAI's Responses API, sent natively to an upstream that serves it.
    Responses,
    /// Anthropic's Messages API, sent natively to an `anthropic` upstream.
    Messages,
}

impl Endpoint {
    /// The path below the provider's base URL (`/chat/completions`, …).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::Messages => "/v1/messages",
        }
    }

    /// Whether streams of this API carry OpenAI's usage chunk (asked for with
    /// `stream_options.include_usage`); the Responses and Messages APIs always report usage.
    pub fn has_stream_options(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }

    /// The front-door path (`/v1/chat/completions`, …).
    pub fn public_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Messages => "/v1/messages",
        }
    }

    /// The field that carries the prompt.
    fn prompt_field(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings | Endpoint::Responses => "input",
        }
    }
}

/// Why a request body was refused: a message for the client and the offending parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub message: String,
    pub param: Option<&'static str>,
}

impl RequestError {
    /// An error with a message for the client and the offending parameter.
    pub fn new(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            message: message.into(),
            param,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RequestError {}

/// A parsed request: its top-level fields as raw slices plus the interpreted ones.
#[derive(Debug)]
pub struct ApiRequest<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The `model` field, when present (Azure requests name the model in the path instead).
    pub model: Option<Cow<'a, str>>,
    /// `stream: true`.
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage: true`).
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `n` (number of choices), when given.
    pub n: Option<u64>,
    /// `best_of` (legacy completions), when given as an integer.
    pub best_of: Option<u64>,
    /// The body carries `logprobs` or `top_logprobs`.
    pub asks_logprobs: bool,
    /// Length in bytes of the raw prompt field: a cheap size estimate before tokenizing.
    pub prompt_bytes: usize,
    /// The API of the body (decides whether a stream's rewrite asks for the usage chunk).
    endpoint: Endpoint,
    /// Length of the body in bytes.
    body_len: usize,
    /// The message list (chat and Messages bodies), read once when the body is parsed.
    messages: Option<prompt::Messages<'a>>,
}

/// Limits the usage policy puts on a request (the guard's action): drop the log-probability
/// fields, cap the number of choices. Applied by [`ApiRequest::rewrite`] with the other changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restrict {
    pub strip_logprobs: bool,
    pub max_n: Option<u64>,
}

impl Restrict {
    /// Nothing restricted.
    pub const NONE: Restrict = Restrict {
        strip_logprobs: false,
        max_n: None,
    };
}

struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The first key that appears twice among `fields`. Two fields of one name would let the
/// gateway read one value (for authorization and billing) and an upstream the other.
fn first_duplicate<'f>(fields: &'f [(Cow<'_, str>, &RawValue)]) -> Option<&'f str> {
    // Bodies have a handful of fields: comparing pairs is cheapest. Many fields are sorted
    // instead, so a body of a million keys costs n log n, not n².
    if fields.len() <= 16 {
        return fields.iter().enumerate().find_map(|(i, (k, _))| {
            fields[..i]
                .iter()
                .any(|(seen, _)| seen == k)
                .then_some(k.as_ref())
        });
    }
    let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

fn duplicate_key(key: &str) -> RequestError {
    const SHOWN: usize = 64;
    let shown = match key.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &key[..end]),
        None => key.to_owned(),
    };
    RequestError::new(
        format!(
            "Duplicate key '{shown}' in the request body: each parameter may appear only once."
        ),
        None,
    )
}

fn type_error(param: &'static str, expected: &str) -> RequestError {
    RequestError::new(
        format!("Invalid type for '{param}': expected {expected}."),
        Some(param),
    )
}

impl<'a> ApiRequest<'a> {
    /// Parses and checks a request body for `endpoint`. `model_in_path` is true for Azure routes,
    /// where the body may omit `model`.
    pub fn parse(
        body: &'a [u8],
        endpoint: Endpoint,
        model_in_path: bool,
    ) -> Result<Self, RequestError> {
        let Fields(fields) = serde_json::from_slice::<Fields<'a>>(body).map_err(|e| {
            RequestError::new(
                format!(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.) Detail: {e}"
                ),
                None,
            )
        })?;
        if let Some(key) = first_duplicate(&fields) {
            return Err(duplicate_key(key));
        }
        let mut req = ApiRequest::uninterpreted(fields, endpoint, body.len());
        let mut has_prompt = false;
        let mut messages = None;
        let prompt_field = endpoint.prompt_field();
        for (name, raw) in &req.fields {
            let raw_str = raw.get();
            let is_null = raw_str == "null";
            match name.as_ref() {
                "model" => {
                    let m: Cow<'a, str> = serde_json::from_str(raw_str)
                        .map_err(|_| type_error("model", "a string"))?;
                    req.model = Some(m);
                }
                "stream" => {
                    req.stream = match raw_str {
                        "true" => true,
                        "false" | "null" => false,
                        _ => return Err(type_error("stream", "a boolean")),
                    }
                }
                "stream_options" if !is_null => {
                    let Fields(opts) = serde_json::from_str::<Fields<'_>>(raw_str)
                        .map_err(|_| type_error("stream_options", "an object"))?;
                    for (k, v) in opts {
                        if k == "include_usage" {
                            req.include_usage = match v.get() {
                                "true" => true,
                                "false" | "null" => false,
                                _ => {
                                    return Err(type_error(
                                        "stream_options.include_usage",
                                        "a boolean",
                                    ));
                                }
                            };
                        }
                    }
                }
                "max_tokens" | "max_completion_tokens" if !is_null => {
                    let v: u64 = serde_json::from_str(raw_str).map_err(|_| {
                        let p = if name == "max_tokens" {
                            "max_tokens"
                        } else {
                            "max_completion_tokens"
                        };
                        type_error(p, "a non-negative integer")
                    })?;
                    if name == "max_completion_tokens" || req.max_tokens.is_none() {
                        req.max_tokens = Some(v);
                    }
                }
                "max_output_tokens" if !is_null && endpoint == Endpoint::Responses => {
                    let v: u64 = serde_json::from_str(raw_str)
                        .map_err(|_| type_error("max_output_tokens", "a non-negative integer"))?;
                    req.max_tokens = Some(v);
                }
                "n" if !is_null => {
                    let v: u64 = serde_json::from_str(raw_str)
                        .map_err(|_| type_error("n", "a positive integer"))?;
                    if v == 0 {
                        return Err(RequestError::new(
                            "0 is less than the minimum of 1 - 'n'",
                            Some("n"),
                        ));
                    }
                    req.n = Some(v);
                }
                "best_of" if !is_null => req.best_of = serde_json::from_str(raw_str).ok(),
                "logprobs" | "top_logprobs" => req.asks_logprobs = true,
                "temperature" | "top_p" | "presence_penalty" | "frequency_penalty"
                    if !is_null && serde_json::from_str::<f64>(raw_str).is_err() =>
                {
                    let p = match name.as_ref() {
                        "temperature" => "temperature",
                        "top_p" => "top_p",
                        "presence_penalty" => "presence_penalty",
                        _ => "frequency_penalty",
                    };
                    return Err(type_error(p, "a number"));
                }
                _ => {}
            }
            if name == prompt_field {
                has_prompt = true;
                req.prompt_bytes = raw_str.len();
                messages = check_prompt(endpoint, raw)?;
            }
        }
        req.messages = messages;
        if req.model.is_none() && !model_in_path {
            return Err(RequestError::new(
                "you must provide a model parameter",
                Some("model"),
            ));
        }
        if !has_prompt {
            return Err(RequestError::new(
                format!("Missing required parameter: '{prompt_field}'."),
                Some(prompt_field),
            ));
        }
        if endpoint == Endpoint::Embeddings && req.stream {
            return Err(RequestError::new(
                "Embeddings cannot be streamed.",
                Some("stream"),
            ));
        }
        Ok(req)
    }

    /// Splits a body into its top-level fields and checks nothing else: for offline tools
    /// (replay, evaluation) whose recorded bodies need not be complete requests. The interpreted
    /// fields are left at their defaults; only a body that is not a JSON object is refused.
    pub fn read(body: &'a [u8], endpoint: Endpoint) -> Result<Self, RequestError> {
        let Fields(fields) = serde_json::from_slice::<Fields<'a>>(body)
            .map_err(|e| RequestError::new(format!("The body is not a JSON object: {e}"), None))?;
        Ok(ApiRequest::uninterpreted(fields, endpoint, body.len()))
    }

    /// The view of `fields` with the interpreted fields at their defaults.
    fn uninterpreted(
        fields: Vec<(Cow<'a, str>, &'a RawValue)>,
        endpoint: Endpoint,
        body_len: usize,
    ) -> Self {
        ApiRequest {
            fields,
            model: None,
            stream: false,
            include_usage: false,
            max_tokens: None,
            n: None,
            best_of: None,
            asks_logprobs: false,
            prompt_bytes: 0,
            endpoint,
            body_len,
            messages: None,
        }
    }

    /// The message list of a chat or Messages body that [`ApiRequest::parse`] read (texts
    /// borrowed from the body): the token estimate and the detector read it from here.
    pub fn messages(&self) -> Option<&prompt::Messages<'a>> {
        self.messages.as_ref()
    }

    /// The API of the body.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Length of the body in bytes.
    pub fn body_len(&self) -> usize {
        self.body_len
    }

    /// The top-level fields in body order: name and raw JSON.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// The raw JSON of a top-level field.
    pub fn field(&self, name: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find_map(|(k, v)| (k == name).then_some(*v))
    }

    /// Choices the upstream will generate: `n` (default 1), capped by `restrict`.
    pub fn choices(&self, restrict: Restrict) -> u64 {
        let n = self.n.unwrap_or(1);
        restrict.max_n.map_or(n, |cap| n.min(cap.max(1)))
    }

    /// Whether the upstream body must differ from the client's: another model name, a stream
    /// that must ask for the usage chunk, or a restriction that applies to this body.
    pub fn needs_rewrite(&self, upstream_model: &str, restrict: Restrict) -> bool {
        self.model.as_deref() != Some(upstream_model)
            || (self.stream && !self.include_usage && self.endpoint.has_stream_options())
            || self.restricted(restrict)
    }

    fn restricted(&self, restrict: Restrict) -> bool {
        (restrict.strip_logprobs && self.asks_logprobs)
            || restrict.max_n.is_some_and(|cap| {
                self.n.is_some_and(|n| n > cap) || self.best_of.is_some_and(|b| b > cap)
            })
    }

    /// The body for the upstream: `model` set to `upstream_model`; for streams
    /// `stream_options.include_usage = true`; under `restrict`, no `logprobs`/`top_logprobs` and
    /// `n`/`best_of` capped. All other fields are copied byte for byte, in order.
    pub fn rewrite(&self, upstream_model: &str, restrict: Restrict) -> Vec<u8> {
        let total: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(total + upstream_model.len() + 48);
        out.push(b'{');
        let mut wrote_model = false;
        let mut wrote_options = false;
        for (k, v) in &self.fields {
            match k.as_ref() {
                "model" => {
                    push_key(&mut out, k);
                    write_json_str(&mut out, upstream_model);
                    wrote_model = true;
                }
                "stream_options" if self.stream && self.endpoint.has_stream_options() => {
                    push_key(&mut out, k);
                    write_stream_options(&mut out, v.get());
                    wrote_options = true;
                }
                "logprobs" | "top_logprobs" if restrict.strip_logprobs => {}
                "n" | "best_of"
                    if restrict.max_n.is_some_and(|cap| {
                        serde_json::from_str::<u64>(v.get()).is_ok_and(|n| n > cap)
                    }) =>
                {
                    push_key(&mut out, k);
                    let cap = restrict.max_n.unwrap_or(1);
                    out.extend_from_slice(cap.to_string().as_bytes());
                }
                _ => {
                    push_key(&mut out, k);
                    out.extend_from_slice(v.get().as_bytes());
                }
            }
        }
        if !wrote_model {
            push_key(&mut out, "model");
            write_json_str(&mut out, upstream_model);
        }
        if self.stream && !wrote_options && self.endpoint.has_stream_options() {
            push_key(&mut out, "stream_options");
            out.extend_from_slice(b"{\"include_usage\":true}");
        }
        out.push(b'}');
        out
    }

    /// Texts of the prompt (message contents, prompt strings or embedding inputs), for counting
    /// tokens where the upstream reports none. Returns the texts and the number of chat messages.
    /// Read with [`crate::prompt`], the reader the distillation detector's features use too.
    pub fn prompt_texts(&self, endpoint: Endpoint) -> (Vec<String>, usize) {
        let Some(raw) = self.field(endpoint.prompt_field()) else {
            return (Vec::new(), 0);
        };
        let mut texts = Vec::new();
        let mut messages = 0;
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages => {
                let read;
                let list = match &self.messages {
                    Some(m) => &m.list,
                    None => {
                        read = prompt::read_messages(raw);
                        &read.list
                    }
                };
                messages = list.len();
                for m in list {
                    texts.extend(m.content.pieces().map(str::to_owned));
                    if endpoint == Endpoint::ChatCompletions
                        && let Some(name) = &m.name
                    {
                        texts.push(name.to_string());
                    }
                }
                if endpoint == Endpoint::Messages
                    && let Some(system) = self.field("system")
                {
                    messages += 1;
                    texts.extend(
                        prompt::read_text(system)
                            .0
                            .into_pieces()
                            .map(Cow::into_owned),
                    );
                }
            }
            Endpoint::Responses => {
                if raw.get().starts_with('[') {
                    let list = prompt::read_messages(raw).list;
                    messages = list.len();
                    for m in list {
                        texts.extend(
                            m.content
                                .into_pieces()
                                .chain(m.output.into_pieces())
                                .map(Cow::into_owned),
                        );
                    }
                } else {
                    messages = 1;
                    texts.extend(prompt::read_text(raw).0.into_pieces().map(Cow::into_owned));
                }
                if let Some(i) = self.field("instructions")
                    && let Ok(s) = serde_json::from_str::<String>(i.get())
                {
                    messages += 1;
                    texts.push(s);
                }
            }
            Endpoint::Completions | Endpoint::Embeddings => {
                texts.extend(prompt::read_text(raw).0.into_pieces().map(Cow::into_owned));
            }
        }
        (texts, messages)
    }
}

/// Checks the prompt field; a message list is read (once) and returned.
fn check_prompt<'a>(
    endpoint: Endpoint,
    raw: &'a RawValue,
) -> Result<Option<prompt::Messages<'a>>, RequestError> {
    let messages = || {
        let m = prompt::read_messages(raw);
        (raw.get().starts_with('[') && m.heads_ok).then_some(m)
    };
    let role = |m: &prompt::Message<'a>| m.role_name.clone().unwrap_or_default();
    match endpoint {
        Endpoint::ChatCompletions => {
            let messages = messages().ok_or_else(|| {
                RequestError::new(
                    "Invalid type for 'messages': expected an array of message objects, each with a string 'role'.",
                    Some("messages"),
                )
            })?;
            if messages.list.is_empty() {
                return Err(RequestError::new(
                    "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                    Some("messages"),
                ));
            }
            for m in &messages.list {
                match role(m).as_ref() {
                    "system" | "user" | "assistant" | "tool" | "function" | "developer" => {}
                    other => {
                        return Err(RequestError::new(
                            format!("Invalid value for 'messages.role': '{other}'."),
                            Some("messages"),
                        ));
                    }
                }
            }
            Ok(Some(messages))
        }
        Endpoint::Messages => {
            let messages = messages().ok_or_else(|| {
                RequestError::new(
                    "messages: Input should be a list of messages, each with a 'role'",
                    Some("messages"),
                )
            })?;
            for m in &messages.list {
                let role = role(m);
                if !matches!(role.as_ref(), "user" | "assistant") {
                    return Err(RequestError::new(
                        format!(
                            "messages.role: Input should be 'user' or 'assistant', not '{role}'"
                        ),
                        Some("messages"),
                    ));
                }
            }
            Ok(Some(messages))
        }
        Endpoint::Completions | Endpoint::Embeddings | Endpoint::Responses => {
            let param = endpoint.prompt_field();
            let param: &'static str = if param == "prompt" { "prompt" } else { "input" };
            let ok = matches!(raw.get().as_bytes().first(), Some(b'"') | Some(b'['));
            if !ok {
                return Err(type_error(param, "a string or an array"));
            }
            serde_json::from_str::<IgnoredAny>(raw.get())
                .map_err(|_| type_error(param, "valid JSON"))?;
            Ok(None)
        }
    }
}

/// Rewrites top-level fields of a JSON object body: each `(name, raw JSON)` in `set` replaces the
/// field's value where it is (or is appended when absent); every other field is copied byte for
/// byte, in order. Used where a body goes upstream in its own API's shape (Responses, Messages)
/// with only the model name changed.
pub fn set_fields(body: &[u8], set: &[(&str, &str)]) -> Result<Vec<u8>, RequestError> {
    let Fields(fields) = serde_json::from_slice::<Fields<'_>>(body)
        .map_err(|e| RequestError::new(format!("The body is not a JSON object: {e}"), None))?;
    let mut out = Vec::with_capacity(body.len() + 32);
    out.push(b'{');
    let mut written = vec![false; set.len()];
    for (k, v) in &fields {
        push_key(&mut out, k);
        match set.iter().position(|(name, _)| name == k) {
            Some(i) => {
                out.extend_from_slice(set[i].1.as_bytes());
                written[i] = true;
            }
            None => out.extend_from_slice(v.get().as_bytes()),
        }
    }
    for ((name, raw), done) in set.iter().zip(written) {
        if !done {
            push_key(&mut out, name);
            out.extend_from_slice(raw.as_bytes());
        }
    }
    out.push(b'}');
    Ok(out)
}

/// A JSON string literal for `s` (quoted and escaped).
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Writes `"key":` into an object being written into `out` (which starts with its `{`), after a
/// comma unless it is the object's first key.
fn push_key(out: &mut Vec<u8>, key: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    write_json_str(out, key);
    out.push(b':');
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_stream_options(out: &mut Vec<u8>, raw: &str) {
    let Ok(Fields(opts)) = serde_json::from_str::<Fields<'_>>(raw) else {
        out.extend_from_slice(b"{\"include_usage\":true}");
        return;
    };
    out.push(b'{');
    for (k, v) in opts.iter().filter(|(k, _)| k != "include_usage") {
        write_json_str(out, k);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"include_usage\":true}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ApiRequest<'_>, RequestError> {
        ApiRequest::parse(body.as_bytes(), Endpoint::ChatCompletions, false)
    }

    #[test]
    fn reads_interpreted_fields() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":7,"n":2}"#).unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert!(r.stream && r.include_usage);
        assert_eq!((r.max_tokens, r.n), (Some(7), Some(2)));
    }

    #[test]
    fn rewrite_keeps_unknown_fields_byte_for_byte() {
        let body = r#"{"model":"public","messages":[{"role":"user","content":"hé \u00e9"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"a":1.50}}}],"seed":42,"logprobs":true}"#;
        let r = parse(body).unwrap();
        assert!(r.needs_rewrite("up", Restrict::NONE));
        let out = String::from_utf8(r.rewrite("up", Restrict::NONE)).unwrap();
        assert_eq!(out, body.replace(r#""model":"public""#, r#""model":"up""#));
        assert!(!r.needs_rewrite("public", Restrict::NONE));
    }

    #[test]
    fn restrictions_strip_logprobs_and_cap_choices_keeping_the_rest() {
        let body = r#"{"model":"m","logprobs":true,"messages":[{"role":"user","content":"x"}],"top_logprobs":5,"n":8,"seed":1}"#;
        let r = parse(body).unwrap();
        let strict = Restrict {
            strip_logprobs: true,
            max_n: Some(1),
        };
        assert!(r.needs_rewrite("m", strict));
        assert_eq!(r.choices(strict), 1);
        assert_eq!(r.choices(Restrict::NONE), 8);
        let out = String::from_utf8(r.rewrite("m", strict)).unwrap();
        assert_eq!(
            out,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1,"seed":1}"#
        );
        // Nothing to restrict: no rewrite.
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1}"#).unwrap();
        assert!(!r.needs_rewrite("m", strict));
    }

    #[test]
    fn stream_rewrite_asks_for_usage_and_keeps_other_options() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#)
            .unwrap();
        assert!(r.needs_rewrite("m", Restrict::NONE));
        let out: serde_json::Value =
            serde_json::from_slice(&r.rewrite("m", Restrict::NONE)).unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);

        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true}}"#).unwrap();
        assert!(!r.include_usage);
        let out: serde_json::Value =
            serde_json::from_slice(&r.rewrite("m", Restrict::NONE)).unwrap();
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"continuous_usage_stats": true, "include_usage": true})
        );
    }

    #[test]
    fn rejects_bad_bodies_with_param() {
        assert!(parse("{not json").unwrap_err().param.is_none());
        assert_eq!(parse("[1,2]").unwrap_err().param, None);
        let cases = [
            (
                r#"{"model":1,"messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":"hi"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":[{"content":"x"}]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(parse(body).unwrap_err().param, Some(param), "{body}");
        }
    }

    #[test]
    fn responses_and_messages_bodies_keep_their_shape_when_rewritten() {
        let body = br#"{"model":"m","input":[{"role":"user","content":"hi there"}],"instructions":"be brief","stream":true,"max_output_tokens":9}"#;
        let r = ApiRequest::parse(body, Endpoint::Responses, false).unwrap();
        assert_eq!((r.stream, r.max_tokens), (true, Some(9)));
        assert!(
            !r.needs_rewrite("m", Restrict::NONE),
            "no stream_options for Responses"
        );
        let out = String::from_utf8(r.rewrite("up", Restrict::NONE)).unwrap();
        assert_eq!(
            out,
            String::from_utf8_lossy(body).replace(r#""model":"m""#, r#""model":"up""#)
        );
        assert_eq!(
            r.prompt_texts(Endpoint::Responses),
            (vec!["hi there".to_owned(), "be brief".to_owned()], 2)
        );
        let body = br#"{"model":"c","max_tokens":5,"system":"sys","messages":[{"role":"user","content":[{"type":"text","text":"q"}]}],"stream":true}"#;
        let r = ApiRequest::parse(body, Endpoint::Messages, false).unwrap();
        assert_eq!(r.max_tokens, Some(5));
        assert!(!r.needs_rewrite("c", Restrict::NONE));
        assert_eq!(
            r.prompt_texts(Endpoint::Messages),
            (vec!["q".to_owned(), "sys".to_owned()], 2)
        );
        let bad = br#"{"model":"c","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#;
        assert_eq!(
            ApiRequest::parse(bad, Endpoint::Messages, false)
                .unwrap_err()
                .param,
            Some("messages")
        );
    }

    #[test]
    fn set_fields_replaces_in_place_and_appends() {
        let body = br#"{"model":"a","input":"h\u00e9 1.50","x":[1, 2]}"#;
        let out = set_fields(body, &[("model", &json_string("b\"c")), ("extra", "true")]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model":"b\"c","input":"h\u00e9 1.50","x":[1, 2],"extra":true}"#
        );
        assert!(set_fields(b"[1]", &[]).is_err());
    }

    #[test]
    fn duplicate_top_level_keys_are_refused_with_the_key_named() {
        let e =
            parse(r#"{"model":"cheap","messages":[{"role":"user","content":"x"}],"model":"dear"}"#)
                .unwrap_err();
        assert!(e.message.contains("Duplicate key 'model'"), "{}", e.message);
        // An escaped spelling is the same key.
        let e = parse(r#"{"model":"a","model":"b","messages":[{"role":"user","content":"x"}]}"#)
            .unwrap_err();
        assert!(e.message.contains("'model'"), "{}", e.message);
        // Any key, also among many.
        let mut body = String::from(r#"{"model":"m","messages":[{"role":"user","content":"x"}]"#);
        for i in 0..100 {
            body.push_str(&format!(r#","k{i}":{i}"#));
        }
        body.push_str(r#","k57":0}"#);
        assert!(parse(&body).unwrap_err().message.contains("'k57'"));
        // Nested objects may repeat names of the top level.
        assert!(parse(r#"{"model":"m","messages":[{"role":"user","content":"x","model":"y"}],"metadata":{"model":"z"}}"#).is_ok());
    }

    #[test]
    fn azure_body_may_omit_model() {
        let r = ApiRequest::parse(
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
            Endpoint::ChatCompletions,
            true,
        )
        .unwrap();
        assert!(r.model.is_none());
        let out: serde_json::Value =
            serde_json::from_slice(&r.rewrite("dep", Restrict::NONE)).unwrap();
        assert_eq!(out["model"], "dep");
    }

    #[test]
    fn embeddings_and_completions_prompts() {
        let r = ApiRequest::parse(
            br#"{"model":"e","input":["a b","c"]}"#,
            Endpoint::Embeddings,
            false,
        )
        .unwrap();
        assert_eq!(r.prompt_texts(Endpoint::Embeddings).0, vec!["a b", "c"]);
        assert!(
            ApiRequest::parse(br#"{"model":"e","input":5}"#, Endpoint::Embeddings, false).is_err()
        );
        let r = ApiRequest::parse(
            br#"{"model":"c","prompt":"once upon"}"#,
            Endpoint::Completions,
            false,
        )
        .unwrap();
        assert_eq!(r.prompt_texts(Endpoint::Completions).0, vec!["once upon"]);
    }

    #[test]
    fn chat_prompt_texts_include_content_parts() {
        let r = parse(r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#).unwrap();
        let (texts, n) = r.prompt_texts(Endpoint::ChatCompletions);
        assert_eq!(
            (texts, n),
            (vec!["be brief".to_owned(), "hello".to_owned()], 2)
        );
    }
}
