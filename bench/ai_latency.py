"""One latency sample for bench/ai.sh: pushes a series with DCMTK's storescu, then polls QIDO-RS
until the study holds an SR series, and splits the time from the last C-STORE answer (storescu's
exit) to the SR being retrievable, using the job record and the worker's own timings.

    python3 bench/ai_latency.py HTTP_PORT DIMSE_PORT SERIES_DIR STUDY_UID

Prints one JSON object (milliseconds).
"""

import glob
import json
import os
import subprocess
import sys
import time
import urllib.request


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as r:
        body = r.read()
        return json.loads(body) if body else []


def main():
    http_port, dimse_port, series_dir, study = sys.argv[1:5]
    files = sorted(glob.glob(os.path.join(series_dir, "*.dcm")))
    env = dict(os.environ, TCP_NODELAY="1")
    subprocess.run(
        ["/usr/bin/storescu", "-aet", "BENCH", "-aec", "PACS", "127.0.0.1", dimse_port, *files],
        check=True, env=env,
    )
    t0 = time.time() * 1000.0
    deadline = time.time() + 600
    while True:
        series = get(http_port, f"/dicom-web/studies/{study}/series?Modality=SR")
        if series:
            t_sr = time.time() * 1000.0
            break
        if time.time() > deadline:
            sys.exit("no SR after 600 s")
        time.sleep(0.02)
    # the SR is in QIDO before the worker reports the job complete (STOW-RS comes first)
    while True:
        jobs = [j for j in get(http_port, "/api/ai/jobs") if j["study_instance_uid"] == study]
        job = jobs[0]
        if job["state"] == "succeeded":
            break
        if time.time() > deadline:
            sys.exit(f"job not succeeded: {job}")
        time.sleep(0.02)
    t = job["result"]["timings"]
    out = {
        "slices": len(files),
        "total_ms": t_sr - t0,
        "wait_for_completion_ms": job["created_at_ms"] - t0,
        "queue_ms": job["started_at_ms"] - job["created_at_ms"],
        "fetch_ms": t["fetch_ms"],
        "assemble_ms": t["assemble_ms"],
        "inference_ms": t["preprocess_ms"] + t["inference_ms"] + t["postprocess_ms"],
        "onnx_run_ms": t["inference_ms"],
        "measure_ms": t["measure_ms"],
        "encode_ms": t["encode_ms"],
        "store_ms": t["store_ms"],
    }
    parts = ["wait_for_completion_ms", "queue_ms", "fetch_ms", "assemble_ms", "inference_ms",
             "measure_ms", "encode_ms", "store_ms"]
    # HTTP round trips, the STOW-RS answer reaching QIDO, the 20 ms polling here
    out["other_ms"] = out["total_ms"] - sum(out[p] for p in parts)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
