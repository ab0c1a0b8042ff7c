"""The 500-item mixed list of issue 13, run through the command line N times.

250 files from a loopback HTTP server (``servers.FaultServer``), 249 small
objects and one of 20 MiB (split into ranged GETs) from moto with
authentication on, all signed with ``--profile`` whose
``credential_process`` counts its runs (``--anonymous``: public objects,
unsigned, the case where botocore never imports ``logging`` first); ``-j 8``. Each run is a fresh
``python -m pyvo_dl`` into a fresh folder; the script prints, per run, the
exit status, the failures reported, the files in place (checked byte for
byte) and the credential look-ups, then a summary::

    python tests/soak/mixed_list.py --runs 20
    python tests/soak/mixed_list.py --runs 20 --anonymous

Run from the repository root, with moto[server], boto3 and botocore
installed. Not a pytest module: it measures what the issue asked to be
measured, for the notes (loopback only, bounded: N runs of 500 items).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from servers import (  # noqa: E402 - after the path it comes from
    FaultServer,
    MotoServer,
    create_moto_user,
    enable_moto_auth,
    s3_client_for,
)

PROCESS = r"""
import json, sys
with open(sys.argv[1], "a") as f:
    f.write("run\n")
print(json.dumps({"Version": 1, "AccessKeyId": sys.argv[2], "SecretAccessKey": sys.argv[3]}))
"""
BIG = 20 * 1024 * 1024


def _body(name: str, size: int) -> bytes:
    block = hashlib.sha256(name.encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--anonymous", action="store_true",
        help="public objects, no --profile (no credential look-ups, no botocore import)",
    )  # fmt: skip
    args = parser.parse_args()
    acl = {"ACL": "public-read"} if args.anonymous else {}
    work = tempfile.mkdtemp(prefix="pyvo-dl-mixed-")
    expected: dict[str, bytes] = {}
    with FaultServer() as http, MotoServer(os.path.join(work, "moto.log")) as moto:
        lines = []
        for i in range(250):
            name = f"h{i:03d}.fits"
            expected[name] = _body(name, 1000 + 37 * i)
            lines.append(http.add_file(f"/archive/{name}", expected[name]))
        s3 = s3_client_for(moto.url)
        s3.create_bucket(Bucket="mixed-bucket", **acl)
        for i in range(249):
            name = f"o{i:03d}.fits"
            expected[name] = _body(name, 2000 + 41 * i)
            s3.put_object(Bucket="mixed-bucket", Key=f"run/{name}", Body=expected[name], **acl)
            lines.append(f"s3://mixed-bucket/run/{name}")
        expected["big.fits"] = _body("big.fits", BIG)
        s3.put_object(Bucket="mixed-bucket", Key="run/big.fits", Body=expected["big.fits"], **acl)
        lines.insert(7, "s3://mixed-bucket/run/big.fits")
        keys = create_moto_user(moto.url)
        if not args.anonymous:
            enable_moto_auth(moto.url)
        listing = os.path.join(work, "list.txt")
        with open(listing, "w") as f:
            f.write("\n".join(lines) + "\n")
        script, log = os.path.join(work, "process.py"), os.path.join(work, "runs.log")
        with open(script, "w") as f:
            f.write(PROCESS)
        config = os.path.join(work, "config")
        with open(config, "w") as f:
            f.write(
                f"[profile mixed]\nregion = us-east-1\ncredential_process = {sys.executable} "
                f"{script} {log} {keys.access_key} {keys.secret_key}\n"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            PYTHONPATH=ROOT, AWS_CONFIG_FILE=config, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )  # fmt: skip
        totals = []
        for run in range(args.runs):
            dest = os.path.join(work, f"run{run:02d}")
            if os.path.exists(log):
                os.remove(log)  # counted per run
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "pyvo_dl", "-q", "-j", "8",
                 *([] if args.anonymous else ["--profile", "mixed"]),
                 "--endpoint-url", moto.url, "-i", listing, "-d", dest],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            took = time.monotonic() - started
            failed = [line for line in done.stderr.splitlines() if "failed:" in line]
            right = sum(_read(os.path.join(dest, name)) == data for name, data in expected.items())
            lookups = len(_read(log).splitlines())
            totals.append((done.returncode, len(failed), right, lookups, took))
            print(
                f"run {run + 1:2d}: exit {done.returncode}, {len(failed)} failed, "
                f"{right}/{len(expected)} files right, {lookups} credential look-up(s), "
                f"{took:.1f} s",
                flush=True,
            )
            if failed:
                print("   first:", failed[0][:300])
        failures = [t[1] for t in totals]
        print(json.dumps({
            "runs": len(totals), "failures_per_run": failures,
            "runs_with_failures": sum(1 for n in failures if n),
            "credential_lookups_per_run": sorted({t[3] for t in totals}),
            "median_seconds": sorted(t[4] for t in totals)[len(totals) // 2],
        }))  # fmt: skip
        return 1 if any(failures) or any(t[0] for t in totals) else 0


if __name__ == "__main__":
    sys.exit(main())
