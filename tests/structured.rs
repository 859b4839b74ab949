//! Structured output on the real llama.cpp: a JSON schema, a GBNF grammar and an OpenAI
//! batch line's `response_format` constrain generation, so every result parses.

use crate::common::*;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "title": {"type": "string", "maxLength": 16},
    "score": {"type": "integer", "minimum": 0, "maximum": 100},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}
  },
  "required": ["title", "score", "tags"],
  "additionalProperties": false
}"#;

#[test]
fn schema_grammar_and_response_format_results_parse() {
    let h = TestHome::new();
    let schema = h.doc("schema.json", SCHEMA);
    let gbnf = h.doc("yesno.gbnf", "root ::= (\"yes\" | \"no\") \".\"\n");
    let tiny = tiny();
    let short = h.doc("short.txt", &prose(1, 60));
    let long = h.doc("long.txt", &prose(2, 900)); // several chunks at n_ctx 512: reduced
    for doc in [&short, &long] {
        h.ok(&[
            "enqueue",
            s(doc),
            "--model",
            s(&tiny),
            "--temperature",
            "0",
            "--max-tokens",
            "160",
            "--json-schema",
            s(&schema),
        ]);
    }
    h.ok(&[
        "enqueue",
        s(&short),
        "--model",
        s(&tiny),
        "--max-tokens",
        "8",
        "--grammar",
        s(&gbnf),
        "--custom-id",
        "yesno",
        "--force",
    ]);
    let line = serde_json::json!({
        "custom_id": "rf",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "messages": [{"role": "user", "content": "Describe a cat."}],
            "max_tokens": 160,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "x", "schema": serde_json::from_str::<serde_json::Value>(SCHEMA).unwrap()
            }}
        }
    });
    let batch = h.doc("batch.jsonl", &format!("{line}\n"));
    h.ok(&["enqueue", "--batch", s(&batch), "--model", s(&tiny)]);

    h.ok(&["worker", "--drain", "--n-ctx", "512"]);
    let results = h.results(&[]);
    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r["state"], "succeeded", "{r}");
        let id = r["custom_id"].as_str().unwrap();
        if id == "yesno" {
            let answer = r["answer"].as_str().unwrap();
            assert!(answer == "yes." || answer == "no.", "{r}");
            assert_eq!(r["constraint"], "grammar");
            assert!(r["json"].is_null());
            continue;
        }
        assert_eq!(r["constraint"], "json_schema", "{r}");
        let j = &r["json"];
        assert!(j["title"].as_str().unwrap().chars().count() <= 16, "{r}");
        let score = j["score"].as_u64().unwrap();
        assert!(score <= 100, "{r}");
        assert!(j["tags"].as_array().unwrap().len() <= 3, "{r}");
        // The stored JSON is the answer, parsed.
        let parsed: serde_json::Value =
            serde_json::from_str(r["answer"].as_str().unwrap().trim()).unwrap();
        assert_eq!(&parsed, j);
        if id == "long.txt" {
            assert!(r["chunks"].as_u64().unwrap() >= 2, "{r}");
        }
    }
}

#[test]
fn a_bad_schema_or_grammar_is_refused_at_enqueue() {
    let h = TestHome::new();
    let tiny = tiny();
    let doc = h.doc("d.txt", "some text");
    let bad_schema = h.doc("bad.json", "{ not json");
    let not_object = h.doc("list.json", "[1, 2]");
    let no_root = h.doc("g.gbnf", "answer ::= \"a\"\n");
    for (flag, file, says) in [
        ("--json-schema", &bad_schema, "not JSON"),
        ("--json-schema", &not_object, "JSON object"),
        ("--grammar", &no_root, "root"),
    ] {
        let err = h.fails(&["enqueue", s(&doc), "--model", s(&tiny), flag, s(file)], 3);
        assert!(err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(count(&h.status(), "queued"), 0, "nothing was stored");
}
