//! The texts of a request's prompt, read from the raw fields of the wire view
//! ([`crate::ApiRequest`]). One reader serves every consumer: the token estimate
//! ([`crate::ApiRequest::prompt_texts`]) and the distillation detector's features. Texts are
//! borrowed from the client's bytes where the JSON string has no escapes.
//!
//! The reader never fails on an unexpected shape: a value that is not text where text belongs (a
//! number as a message's content, a message without a string role, a key given twice) is skipped
//! and marks the result [`odd`](Messages::odd), so a caller that must refuse such bodies can, and
//! one that only counts tokens counts what is there.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The text pieces of one field: a string, or the strings and content parts' `text` of an array.
/// The first piece is held inline so the common single-string case allocates nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text<'a> {
    first: Option<Cow<'a, str>>,
    rest: Vec<Cow<'a, str>>,
}

impl<'a> Text<'a> {
    fn one(piece: Cow<'a, str>) -> Self {
        Text {
            first: Some(piece),
            rest: Vec::new(),
        }
    }

    fn push(&mut self, piece: Cow<'a, str>) {
        if self.first.is_none() {
            self.first = Some(piece);
        } else {
            self.rest.push(piece);
        }
    }

    /// Appends the pieces of `other`.
    pub fn append(&mut self, other: Text<'a>) {
        if let Some(f) = other.first {
            self.push(f);
        }
        self.rest.extend(other.rest);
    }

    /// No piece.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The pieces in order.
    pub fn pieces(&self) -> impl Iterator<Item = &str> {
        self.first.iter().chain(&self.rest).map(|p| p.as_ref())
    }

    /// The pieces owned, in order.
    pub fn into_pieces(self) -> impl Iterator<Item = Cow<'a, str>> {
        self.first.into_iter().chain(self.rest)
    }

    /// The pieces joined by newlines (borrowed when there is at most one).
    pub fn join(self) -> Cow<'a, str> {
        match self.first {
            None => Cow::Borrowed(""),
            Some(f) if self.rest.is_empty() => f,
            Some(f) => {
                let mut s = f.into_owned();
                for r in &self.rest {
                    s.push('\n');
                    s.push_str(r);
                }
                Cow::Owned(s)
            }
        }
    }
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `system` or `developer`.
    System,
    User,
    Assistant,
    /// `tool` or `function` (a tool's result).
    Tool,
    /// Another role, or none.
    Other,
}

impl Role {
    fn of(role: &str) -> Role {
        match role {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            _ => Role::Other,
        }
    }
}

/// One element of a message list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub role: Role,
    /// The `role` string, when it is one.
    pub role_name: Option<Cow<'a, str>>,
    /// The content's text pieces.
    pub content: Text<'a>,
    /// The participant's `name`, when a string.
    pub name: Option<Cow<'a, str>>,
    /// A Responses item's `output` (tool result) and `arguments` (tool call), when strings.
    pub output: Text<'a>,
}

/// A message list (chat `messages`, Anthropic `messages`, Responses `input` items).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Messages<'a> {
    /// One entry per element, also for elements that are not message objects.
    pub list: Vec<Message<'a>>,
    /// Something was not of the shape a message list has (see the module doc).
    pub odd: bool,
    /// Every element is an object with one string `role` (what the APIs require of a message;
    /// the content is not checked).
    pub heads_ok: bool,
}

/// Reads a text field: a string, `null`, or an array of strings and content parts.
pub fn read_text(raw: &RawValue) -> (Text<'_>, bool) {
    match serde_json::from_str::<Lenient<TextValue<'_>>>(raw.get()) {
        Ok(Lenient(Some(t))) => (t.text, t.odd),
        _ => (Text::default(), true),
    }
}

/// Reads a message list (see [`Messages`]); `null` is an empty list.
pub fn read_messages(raw: &RawValue) -> Messages<'_> {
    match serde_json::from_str::<Lenient<Messages<'_>>>(raw.get()) {
        Ok(Lenient(Some(m))) => m,
        _ => Messages {
            list: Vec::new(),
            odd: true,
            heads_ok: false,
        },
    }
}

/// A value read by `T`, or `None` (odd) when the value has another JSON type. `null` is read by
/// `T` too.
struct Lenient<T>(Option<T>);

/// A text value and whether it had an odd shape.
#[derive(Default)]
struct TextValue<'a> {
    text: Text<'a>,
    odd: bool,
}

/// Skips the rest of a map.
fn drain<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Skips the rest of a sequence.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the scalar visits of a lenient visitor: each yields `$odd`.
macro_rules! scalars_are {
    ($odd:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($odd)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($odd)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($odd)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($odd)
        }
    };
}

/// An object key, borrowed unless it has escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A string or `null` (`Some(None)`), else `None`.
struct OptStr<'a>(Option<Option<Cow<'a, str>>>);

impl<'de> Deserialize<'de> for OptStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(OptStr(Some(Some(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OptStr(Some(Some(Cow::Owned(v.to_owned())))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OptStr(Some(None)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq)?;
                Ok(OptStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain(map)?;
                Ok(OptStr(None))
            }
            scalars_are!(OptStr(None));
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Lenient<TextValue<'de>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<TextValue<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text, an array of text or content parts")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(TextValue {
                    text: Text::one(Cow::Borrowed(v)),
                    odd: false,
                })))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(TextValue {
                    text: Text::one(Cow::Owned(v.to_owned())),
                    odd: false,
                })))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(Some(TextValue::default())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = TextValue::default();
                while let Some(Part(piece)) = seq.next_element::<Part<'de>>()? {
                    match piece {
                        Some(Some(p)) => out.text.push(p),
                        Some(None) => {}
                        None => out.odd = true,
                    }
                }
                Ok(Lenient(Some(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain(map)?;
                Ok(Lenient(None))
            }
            scalars_are!(Lenient(None));
        }
        d.deserialize_any(V)
    }
}

/// One element of a text array: `Some(Some(text))` for a string or a part with a string `text`,
/// `Some(None)` for anything without text, `None` for a part whose `text` is not a string.
struct Part<'a>(Option<Option<Cow<'a, str>>>);

impl<'de> Deserialize<'de> for Part<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Part<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a content part")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Part(Some(Some(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Part(Some(Some(Cow::Owned(v.to_owned())))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Part(Some(None)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq)?;
                Ok(Part(Some(None)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut text = Some(None);
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    if k == "text" {
                        text = map.next_value::<OptStr<'de>>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Part(text))
            }
            scalars_are!(Part(Some(None)));
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Lenient<Messages<'de>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<Messages<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of messages")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Messages {
                    heads_ok: true,
                    ..Messages::default()
                })))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Messages {
                    list: Vec::with_capacity(seq.size_hint().unwrap_or(4)),
                    odd: false,
                    heads_ok: true,
                };
                while let Some(Item(m, odd, head_ok)) = seq.next_element::<Item<'de>>()? {
                    out.list.push(m);
                    out.odd |= odd;
                    out.heads_ok &= head_ok;
                }
                Ok(Lenient(Some(out)))
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain(map)?;
                Ok(Lenient(None))
            }
            scalars_are!(Lenient(None));
        }
        d.deserialize_any(V)
    }
}

/// One message list element, whether it was odd, and whether it was an object with one string
/// `role`.
struct Item<'a>(Message<'a>, bool, bool);

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const NOTHING: Message<'static> = Message {
            role: Role::Other,
            role_name: None,
            content: Text {
                first: None,
                rest: Vec::new(),
            },
            name: None,
            output: Text {
                first: None,
                rest: Vec::new(),
            },
        };
        impl<'de> Visitor<'de> for V {
            type Value = Item<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = NOTHING;
                let (mut role, mut content, mut odd) = (false, false, false);
                let mut duplicate_role = false;
                let mut kind: Option<Cow<'de, str>> = None;
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    match k.as_ref() {
                        "role" => {
                            duplicate_role |= role;
                            odd |= role;
                            role = true;
                            match map.next_value::<OptStr<'de>>()?.0 {
                                Some(Some(r)) => {
                                    m.role = Role::of(&r);
                                    m.role_name = Some(r);
                                }
                                _ => {
                                    m.role_name = None;
                                    odd = true;
                                }
                            }
                        }
                        "content" => {
                            odd |= content;
                            content = true;
                            let Lenient(t) = map.next_value::<Lenient<TextValue<'de>>>()?;
                            match t {
                                Some(t) => {
                                    m.content = t.text;
                                    odd |= t.odd;
                                }
                                None => {
                                    m.content = Text::default();
                                    odd = true;
                                }
                            }
                        }
                        "name" => m.name = map.next_value::<OptStr<'de>>()?.0.flatten(),
                        // Responses items: a tool call's arguments, a tool result's output.
                        "output" | "arguments" => {
                            if let Some(Some(s)) = map.next_value::<OptStr<'de>>()?.0 {
                                m.output.push(s);
                            }
                        }
                        "type" => kind = map.next_value::<OptStr<'de>>()?.0.flatten(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if !role {
                    // A Responses item without a role: a tool call or a tool result.
                    m.role = match kind.as_deref() {
                        Some("function_call") => Role::Assistant,
                        Some("function_call_output") => Role::Tool,
                        _ => Role::Other,
                    };
                    odd = true;
                }
                // The head is fine when there is one role and it is a string.
                let head_ok = m.role_name.is_some() && !duplicate_role;
                Ok(Item(m, odd, head_ok))
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Item(NOTHING, true, false))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Item(NOTHING, true, false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Item(NOTHING, true, false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq)?;
                Ok(Item(NOTHING, true, false))
            }
            scalars_are!(Item(NOTHING, true, false));
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn texts_are_read_from_strings_arrays_and_parts() {
        let (t, odd) = read_text(raw(r#""a\nb""#));
        assert_eq!((t.join(), odd), (Cow::Owned("a\nb".into()), false));
        let (t, odd) = read_text(raw(
            r#"["x",{"type":"text","text":"y"},{"type":"image"},7,null,[1]]"#,
        ));
        assert!(!odd);
        assert_eq!(t.pieces().collect::<Vec<_>>(), ["x", "y"]);
        for odd_text in ["7", "true", "{}", r#"[{"text":5}]"#] {
            assert!(read_text(raw(odd_text)).1, "{odd_text}");
        }
        let (t, odd) = read_text(raw("null"));
        assert!(t.is_empty() && !odd);
    }

    #[test]
    fn messages_keep_roles_texts_and_names_and_mark_odd_shapes() {
        let m = read_messages(raw(
            r#"[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}],"name":"ann"},{"role":"assistant","content":null},{"role":"tool","content":"42"}]"#,
        ));
        assert!(!m.odd);
        let roles: Vec<Role> = m.list.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::Tool]
        );
        assert_eq!(m.list[1].name.as_deref(), Some("ann"));
        assert_eq!(m.list[3].content.pieces().collect::<Vec<_>>(), ["42"]);
        for odd in [
            r#"[{"role":"user","content":7}]"#,
            r#"[{"content":"x"}]"#,
            r#"[{"role":1,"content":"x"}]"#,
            r#"[{"role":"user","role":"user","content":"x"}]"#,
            r#"["x"]"#,
            r#""x""#,
            "{}",
        ] {
            assert!(read_messages(raw(odd)).odd, "{odd}");
        }
        assert!(read_messages(raw("null")).list.is_empty() && !read_messages(raw("null")).odd);
        // Heads: objects with one string role; the content is not checked.
        assert!(read_messages(raw(r#"[{"role":"user","content":7}]"#)).heads_ok);
        for bad in [
            r#"[{"content":"x"}]"#,
            r#"[{"role":1}]"#,
            r#"[{"role":"user","role":"user"}]"#,
            r#"["x"]"#,
        ] {
            assert!(!read_messages(raw(bad)).heads_ok, "{bad}");
        }
    }
}
