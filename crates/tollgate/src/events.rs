//! Reading usage events for `tollgate usage import FILE`: JSON Lines (one event object a line),
//! CSV with a header row, or one JSON document `{"events": [...]}`. Events are passed to the
//! API as read; the API checks them (and reports problems by event number).

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// CSV columns whose values are token counts (sent as JSON numbers).
const NUMERIC: &[&str] = &[
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
];

/// The events of a file's text, in file order.
pub fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(text)
        && let Some(events) = doc.remove("events")
    {
        return match events {
            Value::Array(list) => Ok(list),
            _ => bail!("'events' must be an array"),
        };
    }
    if trimmed.starts_with('{') {
        return text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str::<Value>(line)
                    .with_context(|| format!("line {} is not a JSON object", i + 1))
            })
            .collect();
    }
    csv(text)
}

/// Splits one CSV line into fields (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn fields(line: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        bail!("unterminated quoted field");
    }
    out.push(cur);
    Ok(out)
}

fn csv(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = fields(header.trim_end_matches('\r'))?
        .into_iter()
        .map(|h| h.trim().to_owned())
        .collect();
    for required in ["id", "timestamp", "organization", "model"] {
        if !header.iter().any(|h| h == required) {
            bail!(
                "the CSV header has no '{required}' column (found: {}); expected JSON Lines or CSV with a header row",
                header.join(", ")
            );
        }
    }
    let mut events = Vec::new();
    for (i, line) in lines {
        let values =
            fields(line.trim_end_matches('\r')).with_context(|| format!("line {}", i + 1))?;
        if values.len() != header.len() {
            bail!(
                "line {}: {} fields, the header has {}",
                i + 1,
                values.len(),
                header.len()
            );
        }
        let mut event = Map::new();
        for (name, raw) in header.iter().zip(values) {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let value = match raw.parse::<u64>() {
                Ok(n) if NUMERIC.contains(&name.as_str()) => Value::from(n),
                _ => Value::String(raw.to_owned()),
            };
            event.insert(name.clone(), value);
        }
        events.push(Value::Object(event));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_lines_csv_and_documents_give_the_same_events() {
        let jsonl = "{\"id\":\"a\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"organization\":\"o\",\"model\":\"m\",\"input_tokens\":10,\"output_tokens\":2}\n\n";
        let csv = "id,timestamp,organization,model,input_tokens,output_tokens,project\r\na,2026-01-01T00:00:00Z,o,m,10,2,\n";
        let doc = "{\"events\": [{\"id\":\"a\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"organization\":\"o\",\"model\":\"m\",\"input_tokens\":10,\"output_tokens\":2}]}";
        let want = vec![
            json!({"id": "a", "timestamp": "2026-01-01T00:00:00Z", "organization": "o", "model": "m", "input_tokens": 10, "output_tokens": 2}),
        ];
        assert_eq!(parse(jsonl).unwrap(), want);
        assert_eq!(parse(csv).unwrap(), want);
        assert_eq!(parse(doc).unwrap(), want);
    }

    #[test]
    fn csv_quotes_and_bad_rows() {
        assert_eq!(
            fields("a,\"b,c\",\"d\"\"e\"").unwrap(),
            ["a", "b,c", "d\"e"]
        );
        assert!(parse("id,timestamp,organization,model\na,b\n").is_err());
        assert!(parse("name,value\nx,1\n").is_err());
        // A token count that is not a number stays a string for the API to refuse by name.
        let e = parse("id,timestamp,organization,model,input_tokens\na,t,o,m,lots\n").unwrap();
        assert_eq!(e[0]["input_tokens"], json!("lots"));
    }
}
