#!/usr/bin/env python3
"""Profiles Depot during 1 GiB uploads on Mongo + Redis + S3: a single-request upload
(POST /product/upload) and a tus upload in 64 MiB PATCHes, twice each, under
`perf record -g -p PID`; prints each upload's time and Depot's CPU seconds, and leaves
PERF_DIR/{single,tus,single2,tus2}.data for `perf report`. Uses a private services
instance (as `bench/run --own-services`), stopped and deleted at the end.

Usage: bench/upload_perf_probe.py DEPOT_BINARY [PERF_DIR]   (default /var/tmp/depot-upload-perf)
Run it with the harness's Python: /var/tmp/depot-bench-venv/bin/python (made by bench/run).
Then e.g.: perf report -i PERF_DIR/tus.data --no-children -g none --sort symbol --stdio
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (GiB, MiB, FULL, NO_EXPECT, OWN_SERVICES_DIR, Ctx, Depot, b64, chunk_files, curl,  # noqa: E402
                   curl_transfers, drop_mongo_dbs, make_files, own_services_env, parse_args, proc_cpu,
                   services_cmd, services_env)

binary = Path(sys.argv[1]).resolve()
perf_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "/var/tmp/depot-upload-perf")
rd = perf_dir / "run"
ctx = Ctx(args=parse_args(["--no-build"]), sizes=FULL, bench_dir=perf_dir, run_dir=rd, files_dir=rd / "files",
          run_id=f"perf{os.getpid()}", binary=binary, services={}, s3_pid=None)
ctx.own_services = own_services_env()
size, chunk = GiB, 64 * MiB
d = None
try:
    ctx.services = services_env(ctx)
    rd.mkdir(parents=True, exist_ok=True)
    make_files(ctx, {size})
    f = ctx.file(size)
    chunks = chunk_files(ctx, size, chunk)
    d = Depot(ctx, "perf", "s3").start()
    work = d.dir / "w"
    work.mkdir(exist_ok=True)
    tus = ["-H", "Tus-Resumable: 1.0.0", *NO_EXPECT]

    def tus_upload(version: str) -> float:
        meta = f"product {b64('bench')},version {b64(version)},filename {b64(f.name)}"
        (info, h), = curl_transfers([([*d.h(), *tus, "-X", "POST", "-H", f"Upload-Length: {size}",
                                       "-H", f"Upload-Metadata: {meta}", d.url + "/uploads"], "201")], work)
        url, i, t = d.url + h["location"], 0, info["time_total"]
        while i < len(chunks):
            patches = [([*d.h(), *tus, "-X", "PATCH", "-H", f"Upload-Offset: {j * chunk}",
                         "-H", "Content-Type: application/offset+octet-stream", "-T", str(chunks[j]), url], "204")
                       for j in range(i, len(chunks))]
            for pi, _ in curl_transfers(patches, work, tolerate=("423",)):
                t += pi["time_total"]
                if str(pi["http_code"]) == "423":  # see scenario 9 in bench.py
                    time.sleep(0.02)
                    break
                i += 1
        return t

    def single(version: str) -> float:
        return curl([*d.h(), *NO_EXPECT, "-F", "product=bench", "-F", f"version={version}",
                     "-F", f"file=@{f}", d.url + "/product/upload"], out=str(work / "s.json"), expect=(201,))["time_total"]

    d.create_product("bench")
    single("warmup-1")
    tus_upload("warmup-2")
    for kind, fn in (("single", single), ("tus", tus_upload), ("single2", single), ("tus2", tus_upload)):
        p = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", str(perf_dir / f"{kind}.data"),
                              "-p", str(d.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        c0 = proc_cpu(d.pid)
        t = fn(f"v-{kind}")
        c1 = proc_cpu(d.pid)
        p.send_signal(2)
        p.wait()
        print(f"{kind}: {t:.2f} s, Depot CPU {c1 - c0:.2f} s", flush=True)
finally:
    if d:
        d.stop()
    drop_mongo_dbs(ctx)
    services_cmd(ctx, "clean")
    shutil.rmtree(OWN_SERVICES_DIR, ignore_errors=True)
    shutil.rmtree(rd, ignore_errors=True)
