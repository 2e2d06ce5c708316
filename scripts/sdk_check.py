"""The official OpenAI Python SDK against the embedded default, unchanged: plain, streamed
(with and without usage), embeddings, models, legacy completions, the Azure client, and errors;
the Responses API (plain and streamed, with OpenAI and AzureOpenAI) and, with the official
Anthropic SDK, the Messages API (messages.create, messages.stream, count_tokens, errors). The
ledger (GET /admin/v1/usage) must equal the usage the SDKs saw.

Run by scripts/test.sh as: sdk_check.py PATH_TO_TOLLGATE_BINARY
"""
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import json

import anthropic
import embedded
import openai
from openai import AzureOpenAI, OpenAI


def main():
    binary = sys.argv[1]
    data = tempfile.mkdtemp()
    env = dict(os.environ, TOLLGATE_ADMIN_TOKEN="")
    proc, base = embedded.start(binary, data, env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        embedded.wait_healthy(base)
        key = open(os.path.join(data, "demo-key")).read().strip()
        c = OpenAI(base_url=f"{base}/v1", api_key=key)
        r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}])
        assert r.choices[0].message.content and r.usage.completion_tokens == 16, r
        text = ""
        for ch in c.chat.completions.create(model="gpt-4o-mini", stream=True, max_tokens=5,
                                            messages=[{"role": "user", "content": "Hello!"}]):
            assert ch.usage is None, "usage chunk leaked to a client that did not ask"
            if ch.choices:
                text += ch.choices[0].delta.content or ""
        assert len(text.split()) == 5, text
        last = None
        for ch in c.chat.completions.create(model="gpt-4o-mini", stream=True, max_tokens=3,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Hi"}]):
            last = ch
        assert last.usage.completion_tokens == 3, last
        e = c.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
        assert len(e.data) == 2 and e.usage.prompt_tokens > 0
        assert [m.id for m in c.models.list()] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        assert c.models.retrieve("gpt-4o").id == "gpt-4o"
        done = c.completions.create(model="gpt-4o-mini", prompt="once upon", max_tokens=3)
        assert len(done.choices[0].text.split()) == 3
        az = AzureOpenAI(azure_endpoint=base, api_key=key, api_version="2024-10-21")
        assert az.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]).usage.total_tokens > 0
        try:
            OpenAI(base_url=f"{base}/v1", api_key="tg-bad", max_retries=0).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
            raise SystemExit("a bad key was accepted")
        except openai.AuthenticationError as ex:
            assert ex.code == "invalid_api_key"
        try:
            c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
            raise SystemExit("an unknown model was accepted")
        except openai.NotFoundError as ex:
            assert ex.code == "model_not_found"
        check_responses_and_messages(base, data, key)
        print("sdk check: every call behaved as with OpenAI and Anthropic")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ledger(base, data, model):
    """The ledger's totals for one model: (requests, input, cached input, output)."""
    token = open(os.path.join(data, "admin-token")).read().strip()

    def get(path):
        req = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})
        return json.load(urllib.request.urlopen(req, timeout=10))

    totals = [0, 0, 0, 0]
    for org in get("/admin/v1/organizations")["data"]:
        for row in get(f"/admin/v1/usage?organization={org['id']}")["data"]:
            if row["model"] == model:
                totals[0] += row["requests"]
                totals[1] += row["input_tokens"]
                totals[2] += row["cached_input_tokens"]
                totals[3] += row["output_tokens"]
    return totals


def check_responses_and_messages(base, data, key):
    model = "gpt-4o"  # no other call of this script runs it, so its ledger rows are ours
    seen = [0, 0, 0, 0]

    def saw(inp, cached, out):
        seen[0] += 1
        seen[1] += inp
        seen[2] += cached
        seen[3] += out

    # Responses API: OpenAI client, plain and streamed.
    c = OpenAI(base_url=f"{base}/v1", api_key=key)
    r = c.responses.create(model=model, instructions="Be brief.", input="Hello!", max_output_tokens=6)
    # The answer stops at max_output_tokens, so OpenAI's status is "incomplete".
    assert r.object == "response" and r.status == "incomplete", r
    assert r.incomplete_details.reason == "max_output_tokens", r
    assert len(r.output_text.split()) == 6, r.output_text
    saw(r.usage.input_tokens, r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens)
    kinds, text, done = [], "", None
    for ev in c.responses.create(model=model, input=[{"role": "user", "content": "Hi there"}],
                                 max_output_tokens=4, stream=True):
        kinds.append(ev.type)
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type in ("response.completed", "response.incomplete"):
            done = ev.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete", kinds
    assert done.output_text == text and len(text.split()) == 4, (text, done)
    saw(done.usage.input_tokens, done.usage.input_tokens_details.cached_tokens, done.usage.output_tokens)
    # The v1 path, and AzureOpenAI's /openai/responses?api-version=...
    v1 = OpenAI(base_url=f"{base}/openai/v1", api_key=key)
    r = v1.responses.create(model=model, input="One more.", max_output_tokens=2)
    saw(r.usage.input_tokens, r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens)
    az = AzureOpenAI(azure_endpoint=base, api_key=key, api_version="2025-04-01-preview")
    r = az.responses.create(model=model, input="From Azure.", max_output_tokens=3)
    assert len(r.output_text.split()) == 3, r
    saw(r.usage.input_tokens, r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens)
    done = None
    for ev in az.responses.create(model=model, input="Azure stream.", stream=True):
        if ev.type == "response.completed":
            done = ev.response
    assert done.status == "completed" and done.output_text, done
    saw(done.usage.input_tokens, done.usage.input_tokens_details.cached_tokens, done.usage.output_tokens)

    # Messages API: the official Anthropic SDK, plain, streamed, count_tokens, errors.
    a = anthropic.Anthropic(base_url=base, api_key=key)
    m = a.messages.create(model=model, max_tokens=5, system="Be brief.",
                          messages=[{"role": "user", "content": "Hello!"},
                                    {"role": "assistant", "content": "Hi."},
                                    {"role": "user", "content": "Tell me more."}])
    assert m.type == "message" and m.role == "assistant" and m.stop_reason == "max_tokens", m
    assert len(m.content[0].text.split()) == 5, m
    u = m.usage
    saw(u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0),
        u.cache_read_input_tokens or 0, u.output_tokens)
    with a.messages.stream(model=model, max_tokens=3, messages=[{"role": "user", "content": "Stream it"}]) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.content[0].text == streamed and len(streamed.split()) == 3, (streamed, final)
    u = final.usage
    assert u.input_tokens > 0 and u.output_tokens == 3, u
    saw(u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0),
        u.cache_read_input_tokens or 0, u.output_tokens)
    n = a.messages.count_tokens(model=model, messages=[{"role": "user", "content": "Stream it"}])
    assert n.input_tokens > 0, n
    try:
        anthropic.Anthropic(base_url=base, api_key="tg-bad", max_retries=0).messages.create(
            model=model, max_tokens=1, messages=[{"role": "user", "content": "x"}])
        raise SystemExit("a bad key was accepted")
    except anthropic.AuthenticationError as ex:
        assert ex.body["error"]["type"] == "authentication_error", ex.body
    try:
        a.messages.create(model="nope", max_tokens=1, messages=[{"role": "user", "content": "x"}])
        raise SystemExit("an unknown model was accepted")
    except anthropic.NotFoundError as ex:
        assert ex.body["error"]["type"] == "not_found_error", ex.body

    # Every request is in the ledger once, with the usage the SDKs saw.
    got = None
    for _ in range(50):
        got = ledger(base, data, model)
        if got == seen:
            break
        time.sleep(0.1)
    assert got == seen, f"ledger {got} != SDK usage {seen} (requests, input, cached, output)"


if __name__ == "__main__":
    main()
