"""Control plane (issue 6) driven by real AWS clients: boto3 and the aws CLI.

Starts the real `supervisor` binary (target/debug/supervisor or $SUPERVISOR_BIN)
on an ephemeral port with a temporary data dir.
"""

import datetime
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
import zipfile

import pytest

from supervisor_harness import (ACCESS_KEY, REGION, ROLE, SECRET_KEY, Supervisor, bootstrap_zip,
                                code_sha256, error_code, make_zip, require, supervisor_binary)

try:
    import boto3  # noqa: F401
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3/botocore not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)


@pytest.fixture
def server(tmp_path):
    sup = Supervisor(tmp_path / "data").start()
    yield sup
    sup.stop()


@pytest.fixture
def client(server):
    return server.client()


def create(client, name, zip_bytes=None, **kw):
    params = dict(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="bootstrap",
                  Code={"ZipFile": zip_bytes if zip_bytes is not None else bootstrap_zip()})
    params.update(kw)
    return client.create_function(**params)


def test_function_lifecycle(client, server):
    zip1 = bootstrap_zip("v1")
    out = create(client, "lifecycle", zip1, Description="first", MemorySize=256, Timeout=10,
                 Environment={"Variables": {"GREETING": "hi"}}, EphemeralStorage={"Size": 1024})
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert out["FunctionName"] == "lifecycle"
    assert out["FunctionArn"] == f"arn:aws:lambda:{REGION}:000000000000:function:lifecycle"
    assert out["CodeSha256"] == code_sha256(zip1)
    assert out["CodeSize"] == len(zip1)
    assert out["State"] == "Active"
    assert out["Version"] == "$LATEST"
    assert out["MemorySize"] == 256 and out["Timeout"] == 10
    assert out["Environment"]["Variables"] == {"GREETING": "hi"}
    assert out["EphemeralStorage"]["Size"] == 1024
    assert out["RevisionId"] and out["LastModified"]
    datetime.datetime.strptime(out["LastModified"], "%Y-%m-%dT%H:%M:%S.%f%z")

    got = client.get_function(FunctionName="lifecycle")
    assert got["Configuration"]["CodeSha256"] == code_sha256(zip1)
    assert got["Configuration"]["RevisionId"] == out["RevisionId"]
    conf = client.get_function_configuration(FunctionName=out["FunctionArn"])
    assert conf["Description"] == "first"

    # Several MB of incompressible data: well past HTTP-framework default limits.
    zip2 = make_zip({"bootstrap": (b"#!/bin/sh\n", 0o755), "blob.bin": os.urandom(3 * 1024 * 1024)})
    upd = client.update_function_code(FunctionName="lifecycle", ZipFile=zip2)
    assert upd["CodeSha256"] == code_sha256(zip2) and upd["RevisionId"] != out["RevisionId"]

    cfg = client.update_function_configuration(FunctionName="lifecycle", MemorySize=512, Timeout=30,
                                               Description="second", Environment={"Variables": {"A_B": "c"}})
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["Description"]) == (512, 30, "second")
    assert cfg["Environment"]["Variables"] == {"A_B": "c"}
    assert cfg["CodeSha256"] == code_sha256(zip2)

    v1 = client.publish_version(FunctionName="lifecycle", Description="release 1")
    assert v1["Version"] == "1"
    assert v1["FunctionArn"].endswith(":function:lifecycle:1")
    assert v1["Description"] == "release 1"
    # Nothing changed: Lambda hands back the existing version.
    assert client.publish_version(FunctionName="lifecycle")["Version"] == "1"

    client.update_function_configuration(FunctionName="lifecycle", MemorySize=1024)
    v2 = client.publish_version(FunctionName="lifecycle", CodeSha256=code_sha256(zip2))
    assert v2["Version"] == "2"
    assert client.get_function(FunctionName="lifecycle", Qualifier="1")["Configuration"]["MemorySize"] == 512
    assert client.get_function(FunctionName="lifecycle:2")["Configuration"]["MemorySize"] == 1024
    latest = client.get_function_configuration(FunctionName="lifecycle", Qualifier="$LATEST")
    assert latest["FunctionArn"].endswith(":lifecycle:$LATEST")

    versions = client.list_versions_by_function(FunctionName="lifecycle")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]

    client.delete_function(FunctionName="lifecycle", Qualifier="1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="lifecycle", Qualifier="1")
    assert client.get_function(FunctionName="lifecycle", Qualifier="2")["Configuration"]["Version"] == "2"

    deleted = client.delete_function(FunctionName="lifecycle")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="lifecycle")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="lifecycle", Qualifier="2")


def test_create_with_publish_and_python_runtime(client):
    zip_bytes = make_zip({"app.py": b"def handler(e, c):\n    return e\n"})
    out = client.create_function(FunctionName="py", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": zip_bytes}, Publish=True)
    assert out["Version"] == "1" and out["Runtime"] == "python3.11"
    assert client.get_function(FunctionName="py", Qualifier="1")["Configuration"]["Handler"] == "app.handler"
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.create_function(FunctionName="py2", Runtime="python3.11", Role=ROLE,
                               Code={"ZipFile": zip_bytes})


def test_list_functions_pagination(client):
    names = [f"page-{i:02d}" for i in range(7)]
    for n in names:
        create(client, n)
    seen, marker, pages = [], None, 0
    while True:
        kwargs = {"MaxItems": 3}
        if marker:
            kwargs["Marker"] = marker
        page = client.list_functions(**kwargs)
        assert len(page["Functions"]) <= 3
        seen += [f["FunctionName"] for f in page["Functions"]]
        pages += 1
        marker = page.get("NextMarker")
        if not marker:
            break
    assert seen == names and pages == 3
    paginated = [f["FunctionName"] for p in client.get_paginator("list_functions").paginate(
        PaginationConfig={"PageSize": 2}) for f in p["Functions"]]
    assert paginated == names
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.list_functions(Marker="not-a-marker!")


def test_error_shapes_raise_sdk_exceptions(client, server):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as e:
        client.get_function(FunctionName="missing")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ResourceNotFoundException"

    create(client, "dup")
    with pytest.raises(client.exceptions.ResourceConflictException) as e:
        create(client, "dup")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409

    bad_params = [
        dict(MemorySize=10241),
        dict(Timeout=901),
        dict(Runtime="nodejs20.x"),
        dict(Environment={"Variables": {"BIG": "x" * 4100}}),
        dict(Environment={"Variables": {"AWS_REGION": "x"}}),
        dict(EphemeralStorage={"Size": 10241}),
        dict(Role="not-a-role"),
    ]
    for i, extra in enumerate(bad_params):
        with pytest.raises(client.exceptions.InvalidParameterValueException) as e:
            create(client, f"bad-{i}", **extra)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, extra
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_configuration(FunctionName="dup", MemorySize=20000)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.update_function_code(FunctionName="missing", ZipFile=bootstrap_zip())
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_function(FunctionName="missing")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.publish_version(FunctionName="missing")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.get_function(FunctionName="bad/name")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_code(FunctionName="dup:1", ZipFile=bootstrap_zip())
    with pytest.raises(client.exceptions.PreconditionFailedException):
        client.update_function_configuration(FunctionName="dup", Timeout=5, RevisionId="stale")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.delete_function(FunctionName="dup", Qualifier="$LATEST")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.publish_version(FunctionName="dup", CodeSha256="AAAA")

    big = os.urandom(51 * 1024 * 1024)  # incompressible, so the zip is > 50 MB
    with pytest.raises(client.exceptions.RequestTooLargeException) as e:
        create(client, "too-big", make_zip({"blob": big}, zipfile.ZIP_STORED))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413

    # A broken data dir surfaces as ServiceException (500), not a crash.
    for obj in (server.data_dir / "code").iterdir():
        obj.unlink()
    with pytest.raises(client.exceptions.ServiceException) as e:
        client.publish_version(FunctionName="dup")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def signed_request(method, url, body=b"", secret=SECRET_KEY, access=ACCESS_KEY, region=REGION,
                   when=None):
    req = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    auth = SigV4Auth(Credentials(access, secret), "lambda", region)
    if when is not None:
        # botocore reads the clock through datetime; pin it for this signature.
        import botocore.auth as ba
        real = ba.datetime.datetime

        class Frozen(real):
            @classmethod
            def utcnow(cls):
                return when.replace(tzinfo=None)

            @classmethod
            def now(cls, tz=None):
                return when if tz else when.replace(tzinfo=None)

        ba.datetime.datetime = Frozen
        try:
            auth.add_auth(req)
        finally:
            ba.datetime.datetime = real
    else:
        auth.add_auth(req)
    return req


def send(req, body_override=None):
    data = req.body if body_override is None else body_override
    r = urllib.request.Request(req.url, data=data or None, method=req.method, headers=dict(req.headers))
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_signature_required(server, client):
    url = f"{server.endpoint}/2015-03-31/functions/"
    status, headers, body = send(AWSRequest(method="GET", url=url, headers={}))
    assert status == 403
    assert headers["x-amzn-ErrorType"] in ("InvalidSignatureException", "UnrecognizedClientException")
    assert json.loads(body)["Message"]

    status, _, body = send(signed_request("GET", url))
    assert status == 200 and "Functions" in json.loads(body)

    for bad in [dict(secret="wrong-secret"), dict(region="eu-west-1"),
                dict(when=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20))]:
        status, headers, _ = send(signed_request("GET", url, **bad))
        assert status == 403, bad
        assert headers["x-amzn-ErrorType"] == "InvalidSignatureException", bad
    status, headers, _ = send(signed_request("GET", url, access="AKIAUNKNOWNKEY000000"))
    assert (status, headers["x-amzn-ErrorType"]) == (403, "UnrecognizedClientException")

    # The payload hash is covered: a modified body is refused.
    body = json.dumps({"FunctionName": "x", "Runtime": "provided.al2023", "Role": ROLE,
                       "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}}).encode()
    req = signed_request("POST", f"{server.endpoint}/2015-03-31/functions", body)
    status, headers, _ = send(req, body_override=body.replace(b'"x"', b'"y"'))
    assert (status, headers["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")

    wrong = server.client(secret_key="definitely-wrong")
    with pytest.raises(ClientError) as e:
        wrong.list_functions()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error_code(e) == "InvalidSignatureException"
    with pytest.raises(ClientError) as e:
        server.client(access_key="AKIAUNKNOWNKEY000000").list_functions()
    assert error_code(e) == "UnrecognizedClientException"
    # Refused uploads still get a proper error, not a connection reset.
    big = make_zip({"blob": os.urandom(8 * 1024 * 1024)}, zipfile.ZIP_STORED)
    for bad_client, code in [(server.client(access_key="AKIAUNKNOWNKEY000000"), "UnrecognizedClientException"),
                             (wrong, "InvalidSignatureException")]:
        with pytest.raises(ClientError) as e:
            create(bad_client, "never", big)
        assert error_code(e) == code
    assert client.list_functions()["Functions"] == []


@pytest.mark.parametrize("name,files", [
    ("dotdot", {"../evil": b"x"}),
    ("nested-dotdot", {"lib/../../evil": b"x"}),
    ("absolute", {"/etc/evil": b"x"}),
    ("symlink-escape", {"bootstrap": (b"#!/bin/sh\n", 0o755), "link": ("symlink", "../../../etc/passwd")}),
    ("symlink-absolute", {"link": ("symlink", "/etc/shadow")}),
])
def test_unsafe_zips_rejected(client, name, files):
    with pytest.raises(ClientError) as e:
        create(client, f"zip-{name}", make_zip(files))
    assert error_code(e) in ("InvalidParameterValueException", "InvalidZipFileException")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=f"zip-{name}")


def test_zip_bomb_and_garbage_rejected(client):
    bomb = make_zip({"bootstrap": (b"#!/bin/sh\n", 0o755), "zeros": b"\0" * (64 * 1024 * 1024)})
    assert len(bomb) < 200 * 1024
    with pytest.raises(ClientError) as e:
        create(client, "bomb", bomb)
    assert error_code(e) in ("InvalidParameterValueException", "InvalidZipFileException")
    assert "bomb" in e.value.response["Error"]["Message"].lower()
    with pytest.raises(ClientError) as e:
        create(client, "garbage", b"this is not a zip file")
    assert error_code(e) in ("InvalidParameterValueException", "InvalidZipFileException")
    create(client, "ok-after-rejections")
    with pytest.raises(ClientError) as e:
        client.update_function_code(FunctionName="ok-after-rejections", ZipFile=make_zip({"../x": b"x"}))
    assert error_code(e) in ("InvalidParameterValueException", "InvalidZipFileException")


def test_kill9_loses_no_acknowledged_change(tmp_path):
    sup = Supervisor(tmp_path / "data").start()
    client = sup.client()
    acked, stop = {}, threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            name = f"durable-{i:04d}"
            zip_bytes = bootstrap_zip(name)
            try:
                create(client, name, zip_bytes, MemorySize=128 + i)
            except Exception:  # the server died mid-request: not acknowledged
                return
            acked[name] = (code_sha256(zip_bytes), 128 + i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.5)
    sup.kill9()
    stop.set()
    t.join(timeout=30)
    assert len(acked) >= 3, "too few writes before the kill to mean anything"
    print(f"\n{len(acked)} creates acknowledged before SIGKILL")

    sup2 = Supervisor(tmp_path / "data").start()
    try:
        c2 = sup2.client()
        listed = [f for p in c2.get_paginator("list_functions").paginate() for f in p["Functions"]]
        by_name = {f["FunctionName"]: f for f in listed}
        for name, (sha, mem) in acked.items():
            assert name in by_name, f"acknowledged {name} lost"
            assert by_name[name]["CodeSha256"] == sha
            assert by_name[name]["MemorySize"] == mem
        # Whatever exists is whole: every listed function can be read back.
        for name in by_name:
            assert c2.get_function(FunctionName=name)["Configuration"]["State"] == "Active"
        # Updates after restart still work.
        c2.update_function_code(FunctionName=next(iter(acked)), ZipFile=bootstrap_zip("after"))
        # Code objects: exactly one per version, no orphans left behind.
        objects = list((tmp_path / "data" / "code").glob("*.code"))
        assert len(objects) == len(by_name)
    finally:
        sup2.stop()


def test_no_plaintext_in_data_dir(server, client):
    marker = b"PLAINTEXT-MARKER-7f3a9c1e"
    payload = b"#!/bin/sh\necho " + marker + b"\n"
    zip_bytes = make_zip({"bootstrap": (payload, 0o755), "data.txt": marker * 100}, zipfile.ZIP_STORED)
    assert marker in zip_bytes
    create(client, "secret", zip_bytes, Publish=True)
    client.update_function_code(FunctionName="secret", ZipFile=make_zip(
        {"bootstrap": (payload + b"#2\n", 0o755)}, zipfile.ZIP_STORED))
    client.publish_version(FunctionName="secret")
    checked = 0
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            assert marker not in path.read_bytes(), f"plaintext found in {path}"
            checked += 1
    assert checked >= 4
    key = server.data_dir / "master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for obj in (server.data_dir / "code").iterdir():
        assert stat.S_IMODE(obj.stat().st_mode) == 0o600


def test_aws_cli(server, tmp_path):
    aws = shutil.which("aws")
    require(aws is not None, "aws CLI not installed (pip install awscli)")
    zip_path = tmp_path / "fn.zip"
    zip_bytes = bootstrap_zip("cli")
    zip_path.write_bytes(zip_bytes)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_PAGER="")
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)

    def cli(*args):
        return subprocess.run([aws, "--endpoint-url", server.endpoint, "--output", "json", "lambda", *args],
                              env=env, capture_output=True, text=True, timeout=120)

    r = cli("create-function", "--function-name", "cli-fn", "--runtime", "provided.al2023",
            "--role", ROLE, "--handler", "bootstrap", "--zip-file", f"fileb://{zip_path}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["CodeSha256"] == code_sha256(zip_bytes)
    r = cli("get-function", "--function-name", "cli-fn")
    assert r.returncode == 0 and json.loads(r.stdout)["Configuration"]["FunctionName"] == "cli-fn"
    r = cli("update-function-configuration", "--function-name", "cli-fn", "--memory-size", "300",
            "--environment", "Variables={K1=v1}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["MemorySize"] == 300
    r = cli("publish-version", "--function-name", "cli-fn")
    assert r.returncode == 0 and json.loads(r.stdout)["Version"] == "1"
    r = cli("list-functions")
    assert [f["FunctionName"] for f in json.loads(r.stdout)["Functions"]] == ["cli-fn"]
    r = cli("get-function", "--function-name", "nope")
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr
    r = cli("create-function", "--function-name", "cli-fn", "--runtime", "provided.al2023",
            "--role", ROLE, "--zip-file", f"fileb://{zip_path}")
    assert r.returncode != 0 and "ResourceConflictException" in r.stderr
    r = cli("delete-function", "--function-name", "cli-fn")
    assert r.returncode == 0, r.stderr
    bad = dict(env, AWS_SECRET_ACCESS_KEY="wrong")
    r = subprocess.run([aws, "--endpoint-url", server.endpoint, "lambda", "list-functions"],
                       env=bad, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "InvalidSignatureException" in r.stderr


def test_generated_credentials_and_sigterm(tmp_path):
    sup = Supervisor(tmp_path / "data", credentials=False).start()
    try:
        cred_file = tmp_path / "data" / "credentials.toml"
        assert str(cred_file) in sup.log()
        assert stat.S_IMODE(cred_file.stat().st_mode) == 0o600
        creds = tomllib.loads(cred_file.read_text())
        c = sup.client(access_key=creds["access_key_id"], secret_key=creds["secret_access_key"])
        create(c, "with-generated-keys")
        assert [f["FunctionName"] for f in c.list_functions()["Functions"]] == ["with-generated-keys"]
    finally:
        assert sup.stop(signal.SIGTERM) == 0
    assert "shut down cleanly" in sup.log()
    # Restart reuses the stored pair (and prints no new one).
    sup = Supervisor(tmp_path / "data", credentials=False).start()
    try:
        assert sup.log().count("generated access key") == 1
        c = sup.client(access_key=creds["access_key_id"], secret_key=creds["secret_access_key"])
        assert c.get_function(FunctionName="with-generated-keys")["Configuration"]["Version"] == "$LATEST"
    finally:
        sup.stop()


def test_config_file_and_help(tmp_path):
    binary = str(supervisor_binary())
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for flag in ["--listen", "--data-dir", "--access-key-id", "--credentials-file", "--region",
                 "--config", "--master-key-file", "SUPERVISOR_DATA_DIR", "SUPERVISOR_SECRET_ACCESS_KEY"]:
        assert flag in out.stdout, flag
    # A secret is never a flag: argv is world-readable in /proc.
    assert "--secret-access-key" not in out.stdout
    assert subprocess.run([binary, "--help"], capture_output=True, timeout=30).returncode == 0
    bad = subprocess.run([binary, "serve"], capture_output=True, text=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")})
    assert bad.returncode != 0 and "data-dir" in bad.stderr

    cfg = tmp_path / "supervisor.toml"
    cfg.write_text(f'data-dir = "{tmp_path / "cfgdata"}"\naccess-key-id = "AKIAFROMCONFIGFILE00"\n'
                   f'secret-access-key = "from-file"\nregion = "eu-central-1"\n')
    sup = Supervisor(tmp_path / "ignored", credentials=False)
    sup.argv = lambda: [binary, "serve", "--listen", "127.0.0.1:0", "--config", str(cfg)]
    sup.start()
    try:
        c = sup.client(access_key="AKIAFROMCONFIGFILE00", secret_key="from-file", region="eu-central-1")
        out = create(c, "from-config")
        assert out["FunctionArn"].startswith("arn:aws:lambda:eu-central-1:")
        assert (tmp_path / "cfgdata" / "registry.sqlite3").exists()
    finally:
        sup.stop()


def test_concurrent_writers_stay_consistent(server):
    errors = []

    def worker(n):
        c = server.client()
        try:
            name = f"conc-{n}"
            create(c, name)
            for i in range(3):
                c.update_function_configuration(FunctionName=name, MemorySize=128 + i)
                c.update_function_code(FunctionName=name, ZipFile=bootstrap_zip(f"{n}-{i}"))
            c.publish_version(FunctionName=name)
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    c = server.client()
    for n in range(6):
        conf = c.get_function(FunctionName=f"conc-{n}", Qualifier="1")["Configuration"]
        assert conf["MemorySize"] == 130
        assert conf["CodeSha256"] == code_sha256(bootstrap_zip(f"{n}-2"))
    # One object per version ($LATEST + 1 per function): nothing leaked.
    assert len(list((server.data_dir / "code").glob("*.code"))) == 12


def test_second_instance_on_same_data_dir_is_refused(server):
    other = Supervisor(server.data_dir)
    second = subprocess.run(other.argv(), capture_output=True, text=True, timeout=30, env=other.env())
    assert second.returncode != 0
    assert "in use by another supervisor" in second.stderr
    assert server.client().list_functions()["Functions"] == []
