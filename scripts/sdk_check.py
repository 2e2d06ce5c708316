"""The official OpenAI Python SDK against the embedded default, unchanged: plain, streamed
(with and without usage), embeddings, models, legacy completions, the Azure client, and errors.

Run by scripts/test.sh as: sdk_check.py PATH_TO_TOLLGATE_BINARY
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai
from openai import AzureOpenAI, OpenAI


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    binary = sys.argv[1]
    data = tempfile.mkdtemp()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, TOLLGATE_ADMIN_TOKEN="")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("gateway did not become healthy")
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
        print("sdk check: every call behaved as with OpenAI")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
