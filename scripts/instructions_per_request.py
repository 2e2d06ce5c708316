#!/usr/bin/env python3
"""Instructions per request of a tollgate build, counted by callgrind (deterministic, unlike time
on a shared machine; see BENCHMARKS.md).

    scripts/instructions_per_request.py TOLLGATE_BIN BENCH_BIN OUT_PREFIX [N] [stream]

Starts the bench harness's plain mock (`BENCH_BIN mock`), then `valgrind --tool=callgrind
TOLLGATE_BIN serve` with one serving thread and strict durable SQLite metering, creates a key
through the admin API, sends 300 warm-up chat requests (1 KB prompt, one at a time), zeroes the
counters, sends N more (default 1000) and dumps the counts: the printed figure is the
instructions of every thread of the gateway divided by N. The dump (OUT_PREFIX.PID.1) can be read
with callgrind_annotate.
"""
import json, os, socket, subprocess, sys, tempfile, time, http.client

tollgate, bench, out = sys.argv[1], sys.argv[2], sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
stream = len(sys.argv) > 5 and sys.argv[5] == "stream"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

d = tempfile.mkdtemp(prefix="cg-")
mport = free_port()
mock = subprocess.Popen([bench, "mock", "--listen", f"127.0.0.1:{mport}"], stdout=subprocess.DEVNULL)
port = free_port()
cfg = f"""[server]
listen = "127.0.0.1:{port}"
admin_token = "bench-admin"
threads = 1

[storage]
url = "sqlite://{d}/ledger.db"
durability = "strict"

[[providers]]
name = "mock-plain"
kind = "openai"
base_url = "http://127.0.0.1:{mport}/v1"
api_key = "sk-upstream"

[[models]]
name = "bench-plain"
provider = "mock-plain"
upstream_model = "bench-plain"
input_price = "0.15"
output_price = "0.60"
"""
open(f"{d}/tollgate.toml", "w").write(cfg)
gw = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                       "--dump-instr=no", tollgate, "serve", "--config", f"{d}/tollgate.toml"],
                      stdout=subprocess.DEVNULL, stderr=open(f"{out}.log", "w"), cwd=d)

def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)

for _ in range(600):
    try:
        c = conn(); c.request("GET", "/healthz"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except Exception:
        time.sleep(0.5)
else:
    sys.exit("no start")

def admin(path, body):
    c = conn(); c.request("POST", path, json.dumps(body), {"Authorization": "Bearer bench-admin", "Content-Type": "application/json"})
    r = c.getresponse(); v = json.loads(r.read()); return v

org = admin("/admin/v1/organizations", {"name": "bench"})["id"]
proj = admin(f"/admin/v1/organizations/{org}/projects", {"name": "bench"})["id"]
key = admin(f"/admin/v1/projects/{proj}/keys", {"name": "bench"})["key"]
prompt = "x" * 1000
body = json.dumps({"model": "bench-plain", "messages": [{"role": "user", "content": prompt}], "stream": stream})
hdr = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
c = conn()
def one():
    c.request("POST", "/v1/chat/completions", body, hdr)
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
for _ in range(300): one()
subprocess.run(["callgrind_control", "-z", str(gw.pid)], check=True, stdout=subprocess.DEVNULL)
for _ in range(n): one()
subprocess.run(["callgrind_control", "-d", str(gw.pid)], check=True, stdout=subprocess.DEVNULL)
time.sleep(1)
gw.terminate(); gw.wait(); mock.terminate()
import glob
files = sorted(glob.glob(f"{out}.{gw.pid}.*"))
print("dump files:", files)
for f in files:
    for line in open(f):
        if line.startswith("summary:"):
            print(f, "instructions/request:", int(line.split()[1]) / n)
