"""AWS at scale: one credential look-up per call, botocore's errors, the AWS files.

Issue 13 items 2, 6, 8 and 9, against moto with authentication on (a
request passes only when signed by a key moto's IAM knows, for a principal
whose policy allows it) and its STS:

- a profile's credentials are looked up once per ``download_many`` call,
  recursive download and command-line run (a ``credential_process`` that
  counts its runs, STS ``AssumeRole`` calls counted on their way to moto),
  and refreshed when they near their expiry;
- botocore's errors (a failing ``credential_process``, an STS refusal, a
  missing ``source_profile``) are ``DownloadError`` naming the profile and
  the cause, one line on the command line;
- the anonymous-403 fallback probes the default chain once per call (an
  instance-metadata endpoint that counts its requests) and its failure says
  which credentials were tried;
- ``endpoint_url`` in a profile or its ``services`` section, and
  ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, as botocore 1.31+ reads them; a
  403 suggests ``requester_pays=True``.
"""

from __future__ import annotations

import http.client
import http.server
import json
import sys
import threading
import urllib.parse

import pytest

import pyvo_dl
from pyvo_dl import _cli
from servers import (
    S3_READ_POLICY,
    AwsKeys,
    FaultServer,
    aws_client_for,
    build_response,
    create_moto_user,
    enable_moto_auth,
    s3_client_for,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

    from servers import RawServer

pytest.importorskip("botocore", reason="signed S3 needs botocore")

BUCKET = "team-data"
OBJECTS = 20
READ_AND_ASSUME = {
    "Version": "2012-10-17",
    "Statement": [
        *S3_READ_POLICY["Statement"],
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"},
    ],
}
NOTHING = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "iam:GetUser", "Resource": "*"}],
}
ROLE_ARN = "arn:aws:iam::123456789012:role/team-reader"


def _body(i: int) -> bytes:
    return (f"object {i:03d} ".encode() * 400)[: 3000 + i]


def _uris(prefix: str = "run/") -> list[str]:
    return [f"s3://{BUCKET}/{prefix}obj{i:03d}.fits" for i in range(OBJECTS)]


class Principals:
    """Users and a role in moto's IAM, made before auth is switched on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reader = create_moto_user(url, user_name="reader", policy=READ_AND_ASSUME)
        self.s3only = create_moto_user(url, user_name="s3only", policy=S3_READ_POLICY)
        self.nobody = create_moto_user(url, user_name="nobody", policy=NOTHING)
        iam = aws_client_for(url, "iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    # moto matches the caller's own ARN (not the account root)
                    "Principal": {
                        "AWS": [
                            f"arn:aws:iam::123456789012:user/{name}"
                            for name in ("reader", "s3only")
                        ]
                    },
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam.create_role(RoleName="team-reader", AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(
            RoleName="team-reader",
            PolicyName="read",
            PolicyDocument=json.dumps(S3_READ_POLICY),
        )


@pytest.fixture
def private(moto_auth_server: str) -> Principals:
    """A private bucket of 20 objects (run/) plus 3 (other/), principals, auth on."""
    client = s3_client_for(moto_auth_server)
    client.create_bucket(Bucket=BUCKET)
    for i in range(OBJECTS):
        client.put_object(Bucket=BUCKET, Key=f"run/obj{i:03d}.fits", Body=_body(i))
    for i in range(3):
        client.put_object(Bucket=BUCKET, Key=f"other/extra{i}.fits", Body=_body(100 + i))
    principals = Principals(moto_auth_server)
    enable_moto_auth(moto_auth_server)
    return principals


def _keys(keys: AwsKeys) -> str:
    return f"aws_access_key_id = {keys.access_key}\naws_secret_access_key = {keys.secret_key}\n"


def _aws_files(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, config: str, credentials: str = ""
) -> None:
    (tmp / "aws-config").write_text(config)
    (tmp / "aws-credentials").write_text(credentials)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "aws-credentials"))


class CredentialProcess:
    """A ``credential_process`` that counts its runs and answers from a list.

    Answer ``n`` (the last one from there on) is ``(keys, seconds to expiry
    or None)``; ``None`` instead of a pair makes the run fail with exit
    status 1 and a message on stderr, as a real helper whose token expired.
    """

    SCRIPT = r"""
import datetime, json, sys
answers, log = json.load(open(sys.argv[1])), sys.argv[2]
with open(log, "a") as f:
    f.write("run\n")
runs = len(open(log).read().splitlines())
answer = answers[min(runs, len(answers)) - 1]
if answer is None:
    sys.stderr.write("sso token expired: log in again\n")
    sys.exit(1)
keys, seconds = answer
out = {"Version": 1, "AccessKeyId": keys[0], "SecretAccessKey": keys[1]}
if keys[2]:
    out["SessionToken"] = keys[2]
if seconds is not None:
    now = datetime.datetime.now(datetime.timezone.utc)
    out["Expiration"] = (now + datetime.timedelta(seconds=seconds)).isoformat()
print(json.dumps(out))
"""

    def __init__(self, tmp: Path, answers: list[Any]) -> None:
        self.log = tmp / "process-runs.log"
        script = tmp / "credential_process.py"
        script.write_text(self.SCRIPT)
        spec = tmp / "process-answers.json"
        spec.write_text(
            json.dumps(
                [
                    None if a is None else [[a[0].access_key, a[0].secret_key, a[0].token], a[1]]
                    for a in answers
                ]
            )
        )
        self.command = f"{sys.executable} {script} {spec} {self.log}"

    @property
    def runs(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


def _profile_with_process(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, answers: list[Any], name: str = "proc"
) -> CredentialProcess:
    process = CredentialProcess(tmp, answers)
    section = "[default]" if name == "default" else f"[profile {name}]"
    _aws_files(
        tmp, monkeypatch, f"{section}\nregion = us-east-1\ncredential_process = {process.command}\n"
    )
    return process


def _all_fine(results: list[Any], folder: Path) -> None:
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[0]
    for i in range(OBJECTS):
        assert (folder / f"obj{i:03d}.fits").read_bytes() == _body(i)


# -- 13.2: one look-up per call, refreshed -----------------------------------------


def test_a_profile_is_looked_up_once_per_download_many(
    private: Principals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = _profile_with_process(tmp_path, monkeypatch, [(private.reader, None)])
    results = pyvo_dl.download_many(
        _uris(), tmp_path / "out", aws_profile="proc", endpoint_url=private.url, progress=False
    )
    _all_fine(results, tmp_path / "out")
    assert process.runs == 1  # before: one run per object


def _skip_unless_moto_verifies_signed_listings(private: Principals) -> None:
    """Skip where moto refuses its own signed ListObjectsV2 (moto 5.0, the last for 3.8).

    botocore's own signature is refused there too, so no client could pass.
    """
    client = s3_client_for(private.url, keys=private.reader)
    try:
        client.list_objects_v2(Bucket=BUCKET, Prefix="run/", EncodingType="url")
    except Exception as exc:  # botocore's ClientError, without importing it here
        if "SignatureDoesNotMatch" not in str(exc):
            raise
        import moto

        pytest.skip(f"moto {moto.__version__} refuses signed listings, botocore's too")


def test_a_recursive_download_looks_up_once(
    private: Principals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_unless_moto_verifies_signed_listings(private)
    process = _profile_with_process(tmp_path, monkeypatch, [(private.reader, None)])
    folder = pyvo_dl.aws_download(
        uri=f"s3://{BUCKET}/run/", local_filepath=str(tmp_path / "tree"), recursive=True,
        aws_profile="proc", endpoint_url=private.url, progress=False,
    )  # fmt: skip
    _all_fine([], tmp_path / "tree")
    assert folder == str(tmp_path / "tree")
    assert process.runs == 1  # the listing and the 20 objects


def test_a_command_line_run_looks_up_once(
    private: Principals,
    http_server: FaultServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process = _profile_with_process(tmp_path, monkeypatch, [(private.reader, None)])
    listing = tmp_path / "list.txt"
    plain = [http_server.add_file(f"/plain/p{i}.fits", _body(200 + i)) for i in range(3)]
    listing.write_text("\n".join(plain + _uris()) + "\n")
    common = ["--profile", "proc", "--endpoint-url", private.url, "-q"]
    status = _cli.main([*common, "-i", str(listing), "-d", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr().err
    _all_fine([], tmp_path / "out")
    assert process.runs == 1


def test_a_recursive_command_line_run_looks_up_once(
    private: Principals,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _skip_unless_moto_verifies_signed_listings(private)
    process = _profile_with_process(tmp_path, monkeypatch, [(private.reader, None)])
    common = ["--profile", "proc", "--endpoint-url", private.url, "-q"]
    # Two prefixes, listed and downloaded in one run: one look-up.
    status = _cli.main(
        [*common, "--recursive", "-d", str(tmp_path / "tree"),
         f"s3://{BUCKET}/run/", f"s3://{BUCKET}/other/"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    _all_fine([], tmp_path / "tree")
    assert (tmp_path / "tree" / "extra2.fits").read_bytes() == _body(102)
    assert process.runs == 1


def test_expiring_credentials_are_refreshed_not_looked_up_per_object(
    private: Principals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first answer expires within botocore's 15-minute refresh window
    # (outside the 10-minute one where it would be refused): the first use
    # refreshes it, once, and the second answer lasts.
    process = _profile_with_process(
        tmp_path, monkeypatch, [(private.reader, 12 * 60), (private.s3only, 3600)]
    )
    results = pyvo_dl.download_many(
        _uris(), tmp_path / "out", aws_profile="proc", endpoint_url=private.url, progress=False
    )
    _all_fine(results, tmp_path / "out")
    assert process.runs == 2  # before: two per object; frozen once, it would be 1


class StsCounter:
    """Passes every request on to moto's STS, counting the AssumeRole calls.

    Not an imitation of anything: a counter in front of the real (moto) STS.
    """

    def __init__(self, target: str) -> None:
        self.assume_role_calls = 0
        counter = self
        parts = urllib.parse.urlsplit(target)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if b"Action=AssumeRole" in body:
                    counter.assume_role_calls += 1
                upstream = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
                headers = dict(self.headers.items())  # Host as signed
                upstream.request("POST", self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                payload = answer.read()
                upstream.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StsCounter:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sts(private: Principals, monkeypatch: pytest.MonkeyPatch) -> Iterator[StsCounter]:
    with StsCounter(private.url) as counter:
        # botocore 1.31+ sends the role's STS calls to this endpoint.
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", counter.url)
        yield counter


def _role_profile(tmp: Path, monkeypatch: pytest.MonkeyPatch, source: AwsKeys) -> None:
    _aws_files(
        tmp, monkeypatch,
        f"[profile role]\nrole_arn = {ROLE_ARN}\nsource_profile = base\nregion = us-east-1\n",
        f"[base]\n{_keys(source)}",
    )  # fmt: skip


def test_an_assumed_role_costs_one_sts_call(
    private: Principals, sts: StsCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _role_profile(tmp_path, monkeypatch, private.reader)
    results = pyvo_dl.download_many(
        _uris(), tmp_path / "out", aws_profile="role", endpoint_url=private.url, progress=False
    )
    _all_fine(results, tmp_path / "out")
    assert sts.assume_role_calls == 1  # before: one per object


# -- 13.6: botocore's errors are DownloadErrors naming the profile -----------------


def test_a_failing_credential_process_is_a_download_error(
    private: Principals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = _profile_with_process(tmp_path, monkeypatch, [None], name="broken")
    with pytest.raises(pyvo_dl.DownloadError) as info:
        pyvo_dl.aws_download(
            uri=_uris()[0], aws_profile="broken", endpoint_url=private.url,
            local_filepath=str(tmp_path / "one.fits"),
        )  # fmt: skip
    message = str(info.value)
    assert "AWS profile 'broken'" in message
    assert "sso token expired" in message
    assert type(info.value.__cause__).__module__.startswith("botocore")
    results = pyvo_dl.download_many(
        _uris()[:5], tmp_path / "out", aws_profile="broken", endpoint_url=private.url,
        progress=False,
    )  # fmt: skip
    assert all(type(r) is pyvo_dl.DownloadError for r in results), results
    assert all("AWS profile 'broken'" in str(r) for r in results)
    assert process.runs == 2  # once for the single call, once for the batch
    assert not list((tmp_path / "out").glob("*"))


def test_an_sts_refusal_is_a_download_error(
    private: Principals, sts: StsCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _role_profile(tmp_path, monkeypatch, private.s3only)  # may read S3, not assume roles
    results = pyvo_dl.download_many(
        _uris()[:4], tmp_path / "out", aws_profile="role", endpoint_url=private.url,
        progress=False,
    )  # fmt: skip
    assert all(type(r) is pyvo_dl.DownloadError for r in results), results
    message = str(results[0])
    assert "AWS profile 'role'" in message
    assert "AssumeRole" in message
    assert "AccessDenied" in message
    assert sts.assume_role_calls == 1


def test_a_missing_source_profile_is_a_download_error(
    private: Principals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _aws_files(
        tmp_path, monkeypatch, f"[profile role]\nrole_arn = {ROLE_ARN}\nsource_profile = ghost\n"
    )
    with pytest.raises(pyvo_dl.DownloadError, match=r"AWS profile 'role'.*ghost"):
        pyvo_dl.aws_download(
            uri=_uris()[0], aws_profile="role", endpoint_url=private.url,
            local_filepath=str(tmp_path / "one.fits"),
        )  # fmt: skip


@pytest.mark.parametrize("count", [1, 3])
def test_the_command_line_says_it_in_one_line(
    private: Principals,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    count: int,
) -> None:
    _profile_with_process(tmp_path, monkeypatch, [None], name="broken")
    status = _cli.main(
        ["--profile", "broken", "--endpoint-url", private.url, "-d", str(tmp_path / "out"),
         *_uris()[:count]]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == _cli.EXIT_FAILED
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if "failed:" in line]
    assert len(failures) == count
    assert all("AWS profile 'broken'" in line and "sso token expired" in line for line in failures)


# -- 13.8: the anonymous-403 fallback probes the default chain once ----------------


@pytest.fixture
def metadata_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    """An instance-metadata endpoint that knows no role, counting what is asked.

    Imitates EC2's IMDS on a node without an instance profile: the token
    PUT answers, the role listing is 404. botocore asks it when nothing
    else in the chain has credentials.
    """
    with FaultServer() as server:
        server.add_file("/latest/api/token", b"token-for-imds")
        monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.base_url + "/")
        yield server


def test_the_default_chain_is_probed_once_per_call(
    private: Principals, metadata_endpoint: FaultServer, tmp_path: Path
) -> None:
    results = pyvo_dl.download_many(
        _uris(), tmp_path / "out", endpoint_url=private.url, progress=False
    )
    assert all(isinstance(r, pyvo_dl.S3Error) and r.status == 403 for r in results), results
    assert "no credentials were found on this machine" in str(results[0])
    asked = [r.path for r in metadata_endpoint.requests if "security-credentials" in r.path]
    assert len(asked) == 1, asked  # before: one probe per object


def test_a_found_default_chain_is_used_once(
    private: Principals,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process = _profile_with_process(tmp_path, monkeypatch, [(private.reader, None)], "default")
    results = pyvo_dl.download_many(
        _uris(), tmp_path / "out", endpoint_url=private.url, progress=False, verbose=True,
        workers=2,
    )  # fmt: skip
    _all_fine(results, tmp_path / "out")
    assert process.runs == 1
    # The bucket refused anonymous reads once; its next objects start signed
    # (all but those already under way on the other thread).
    out = capsys.readouterr().out
    assert out.count("retrying with system credentials") <= 2
    assert out.count("Access with system credentials") >= OBJECTS - 2


def test_a_failed_fallback_says_which_credentials_it_tried(
    private: Principals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", private.nobody.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", private.nobody.secret_key)
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(
            uri=_uris()[0], endpoint_url=private.url, local_filepath=str(tmp_path / "x.fits")
        )
    message = str(info.value)
    assert info.value.status == 403
    assert "AWS_ACCESS_KEY_ID" in message
    assert "refused too" in message


# -- 13.9: the AWS files' endpoint settings, requester pays ------------------------


def _public(s3_endpoint: str) -> bytes:
    body = b"public bytes " * 100
    client = s3_client_for(s3_endpoint)
    client.create_bucket(Bucket="open-data", ACL="public-read")
    client.put_object(Bucket="open-data", Key="sky/m31.fits", Body=body, ACL="public-read")
    return body


@pytest.mark.parametrize(
    "config",
    [
        "[profile ceph]\nendpoint_url = {url}\n",
        "[profile ceph]\nservices = local\n[services local]\ns3 =\n  endpoint_url = {url}\n",
        # The S3 block of the services section wins over the profile's own.
        (
            "[profile ceph]\nendpoint_url = http://127.0.0.1:9\nservices = local\n"
            "[services local]\ns3 =\n  endpoint_url = {url}\n"
        ),
    ],
    ids=["profile", "services", "services-first"],
)
def test_a_profile_names_the_endpoint(
    private: Principals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    _aws_files(
        tmp_path, monkeypatch, config.format(url=private.url), f"[ceph]\n{_keys(private.reader)}"
    )
    path = pyvo_dl.aws_download(
        uri=_uris()[3], aws_profile="ceph", local_filepath=str(tmp_path / "three.fits")
    )
    assert (tmp_path / "three.fits").read_bytes() == _body(3)
    assert path == str(tmp_path / "three.fits")


@pytest.mark.parametrize("select", [None, "AWS_PROFILE", "AWS_DEFAULT_PROFILE"])
def test_anonymous_reads_follow_the_profile_in_use(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, select: str | None
) -> None:
    body = _public(s3_endpoint)
    section = "[default]" if select is None else "[profile site]"
    _aws_files(tmp_path, monkeypatch, f"{section}\nendpoint_url = {s3_endpoint}\n")
    if select is not None:
        monkeypatch.setenv(select, "site")
    pyvo_dl.aws_download("s3://open-data/sky/m31.fits", local_filepath=str(tmp_path / "m31.fits"))
    assert (tmp_path / "m31.fits").read_bytes() == body


def test_the_environment_wins_over_the_files(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _public(s3_endpoint)
    _aws_files(tmp_path, monkeypatch, "[default]\nendpoint_url = http://127.0.0.1:9\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    pyvo_dl.aws_download("s3://open-data/sky/m31.fits", local_filepath=str(tmp_path / "m31.fits"))
    assert (tmp_path / "m31.fits").read_bytes() == body


@pytest.mark.parametrize("where", ["variable", "profile"])
def test_configured_endpoints_can_be_ignored(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from pyvo_dl import _api, _s3

    body = _public(s3_endpoint)
    switch = "ignore_configured_endpoint_urls = true\n" if where == "profile" else ""
    _aws_files(tmp_path, monkeypatch, f"[default]\nendpoint_url = {s3_endpoint}\n{switch}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    if where == "variable":
        monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    # Where aws_download would send the request, from the real files and
    # variables (asked of the function that decides, as AWS is not reachable
    # from a test): both configured endpoints ignored, AWS itself.
    target, _ = _api._s3_target(
        "open-data", "sky/m31.fits", None, None, None, None, False, _s3.AwsContext()
    )
    assert target.url() == "https://open-data.s3.amazonaws.com/sky/m31.fits"
    # An explicit endpoint_url= is never ignored.
    pyvo_dl.aws_download(
        "s3://open-data/sky/m31.fits", endpoint_url=s3_endpoint,
        local_filepath=str(tmp_path / "m31.fits"),
    )  # fmt: skip
    assert (tmp_path / "m31.fits").read_bytes() == body


def test_a_services_section_that_is_missing_names_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _aws_files(tmp_path, monkeypatch, "[default]\nservices = nowhere\n")
    with pytest.raises(ValueError, match=r"profile 'default'.*\[services nowhere\]"):
        pyvo_dl.aws_download("s3://open-data/sky/m31.fits", local_filepath=str(tmp_path / "x"))


_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>R1</RequestId></Error>"
)


def _requester_pays_bucket(conn: Any, request: bytes) -> None:
    """Imitates S3 serving a requester-pays bucket (path style).

    S3 answers a request that does not accept the charges (no
    ``x-amz-request-payer: requester``) with ``403 AccessDenied``, the same
    answer as for an object one may not read; with the header it serves the
    object (here: to anyone, as the real one does to any signed reader).
    """
    head = request.split(b"\r\n\r\n", 1)[0].lower()
    body = b"paid bytes " * 50
    if b"\r\nx-amz-request-payer: requester" in head:
        headers = {"ETag": '"0"', "Content-Type": "application/octet-stream"}
        answer = build_response(
            200, headers=headers, body=b"" if head.startswith(b"head") else body
        )
    else:
        answer = build_response(
            403, headers={"Content-Type": "application/xml"}, body=_ACCESS_DENIED
        )
    conn.sendall(answer)


def test_a_403_suggests_requester_pays(raw_server_factory: Any, tmp_path: Path) -> None:
    server: RawServer = raw_server_factory(_requester_pays_bucket)
    with pytest.raises(pyvo_dl.S3Error, match=r"requester_pays=True") as info:
        pyvo_dl.aws_download(
            "s3://paid-data/sky/m31.fits", endpoint_url=server.base_url,
            local_filepath=str(tmp_path / "m31.fits"),
        )  # fmt: skip
    assert info.value.code == "AccessDenied"
    pyvo_dl.aws_download(
        "s3://paid-data/sky/m31.fits", endpoint_url=server.base_url, requester_pays=True,
        local_filepath=str(tmp_path / "m31.fits"),
    )  # fmt: skip
    assert (tmp_path / "m31.fits").read_bytes() == b"paid bytes " * 50


def test_no_hint_of_requester_pays_once_it_was_passed(
    raw_server_factory: Any, tmp_path: Path
) -> None:
    def refuse(conn: Any, request: bytes) -> None:
        conn.sendall(
            build_response(403, headers={"Content-Type": "application/xml"}, body=_ACCESS_DENIED)
        )

    server: RawServer = raw_server_factory(refuse)
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(
            "s3://paid-data/sky/m31.fits", endpoint_url=server.base_url, requester_pays=True,
            local_filepath=str(tmp_path / "m31.fits"),
        )  # fmt: skip
    assert "requester_pays" not in str(info.value)
