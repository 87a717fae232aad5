#!/usr/bin/env python3
"""A/B probe of the fixed cost of an upload on MongoDB + Redis + S3: N sequential 1 MiB
uploads; prints the median time and the metadata calls per upload from /metrics.
Usage: bench/commit_probe.py BINARY N   (services from scripts/services.sh start all)
PROBE_SEED=K first publishes K small versions; PROBE_QUOTA=BYTES sets the product's
max_bytes quota (each upload then takes a quota reservation, which reads the product's
versions): the cost of a quota, against the same run without PROBE_QUOTA."""
import os, sys, subprocess, time, secrets, socket, urllib.request, json, statistics, re, tempfile
binary, n = sys.argv[1], int(sys.argv[2])
s = dict(l.split(" ",1)[1].split("=",1) for l in subprocess.check_output([os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "services.sh"),"env"],text=True).splitlines())
sock = socket.socket(); sock.bind(("127.0.0.1",0)); port = sock.getsockname()[1]; sock.close()
import string
admin = "depot_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))
tag = secrets.token_hex(4)
d = tempfile.mkdtemp(prefix="measure-")
env = {k:v for k,v in os.environ.items() if not k.startswith(("DEPOT_","AWS_"))}
env.update(DEPOT_LISTEN=f"127.0.0.1:{port}", DEPOT_DATA_DIR=d+"/data", DEPOT_ADMIN_TOKEN=admin, DEPOT_LOG="warn",
  DEPOT_MONGO_URL=s["DEPOT_TEST_MONGO_URL"], DEPOT_MONGO_DB="measure_"+tag, DEPOT_REDIS_URL=s["DEPOT_TEST_REDIS_URL"],
  DEPOT_SIGNING_KEY=secrets.token_hex(32), DEPOT_S3_BUCKET="measure-"+tag, DEPOT_S3_ENDPOINT=s["DEPOT_TEST_S3_ENDPOINT"],
  DEPOT_S3_REGION="us-east-1", DEPOT_S3_CREATE_BUCKET="true", AWS_ACCESS_KEY_ID=s["AWS_ACCESS_KEY_ID"],
  AWS_SECRET_ACCESS_KEY=s["AWS_SECRET_ACCESS_KEY"], AWS_REGION="us-east-1")
env.update(kv.split("=",1) for kv in os.environ.get("MEASURE_ENV","").split() if "=" in kv)
p = subprocess.Popen([binary,"serve"], env=env, stdout=open(d+"/log","wb"), stderr=subprocess.STDOUT)
url = f"http://127.0.0.1:{port}"
for _ in range(600):
    try:
        urllib.request.urlopen(url+"/livez", timeout=1); break
    except OSError: time.sleep(0.1)
def req(method, path, body=None):
    r = urllib.request.Request(url+path, method=method, data=body, headers={"X-Api-Token":admin,"Content-Type":"application/json"})
    return urllib.request.urlopen(r).read()
req("PUT","/product/create", json.dumps({"name":"m"}).encode())
for i in range(int(os.environ.get("PROBE_SEED","0"))):
    subprocess.run(["curl","-s","-o","/dev/null","-H",f"X-Api-Token: {admin}","-F","product=m","-F",f"version=0.0.{i}","-F","file=@/etc/hostname",url+"/product/upload"],check=True)
if os.environ.get("PROBE_QUOTA"):
    req("PUT","/product/settings/m", json.dumps({"quota":{"max_bytes":int(os.environ["PROBE_QUOTA"])}}).encode())
f = d+"/f.bin"; open(f,"wb").write(os.urandom(1<<20))
def metrics():
    out = {}
    for l in urllib.request.urlopen(url+"/metrics").read().decode().splitlines():
        m = re.match(r'depot_backend_call_seconds_(sum|count)\{(.*)\} (\S+)', l)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.setdefault((labels.get("backend"),labels.get("op")),{})[m.group(1)] = float(m.group(3))
    return out
times = []
for i in range(3):  # warm-up
    subprocess.run(["curl","-s","-o","/dev/null","-H",f"X-Api-Token: {admin}","-F","product=m","-F",f"version=w{i}","-F",f"file=@{f}",url+"/product/upload"],check=True)
before = metrics()
for i in range(n):
    t = subprocess.run(["curl","-s","-o","/dev/null","-w","%{time_total} %{http_code}","-H",f"X-Api-Token: {admin}","-F","product=m","-F",f"version=1.0.{i}","-F",f"file=@{f}",url+"/product/upload"],check=True,capture_output=True,text=True).stdout.split()
    assert t[1]=="201", t
    times.append(float(t[0])*1000)
after = metrics()
print(f"{binary}: {n} uploads of 1 MiB: median {statistics.median(times):.1f} ms, mean {statistics.mean(times):.1f} ms")
for k in sorted(after):
    c = after[k].get("count",0)-before.get(k,{}).get("count",0)
    if c:
        sm = after[k].get("sum",0)-before.get(k,{}).get("sum",0)
        print(f"  {k[0]:6} {k[1]:28} {c/n:5.2f} calls/upload  {sm/c*1000:7.2f} ms/call  {sm/n*1000:7.2f} ms/upload")
p.terminate(); p.wait()
