"""Function URLs (issue 15): configuration through boto3, and plain HTTP requests
translated to Lambda's version 2.0 event and back, with AWS_IAM (SigV4) and NONE auth
(which needs a public resource policy), CORS, binary bodies, host-based routing and
RESPONSE_STREAM. Process backend: awslambdaric (Python) and lambda_runtime (Rust).
"""

import base64
import http.client
import json
import os
import time
import urllib.parse

import pytest

from invoke_harness import IMAGES, deploy, start_supervisor
from supervisor_harness import (ACCESS_KEY, REGION, ROLE, SECRET_KEY, error_code, make_zip,
                                require)

try:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3/botocore not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

APP = b'''
import base64

def echo_event(event, context):
    return event

def http(event, context):
    return {"statusCode": 201, "headers": {"x-made": "yes", "content-type": "text/plain"},
            "cookies": ["a=1", "b=2"], "body": "made " + event["rawPath"]}

def binary(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}

def fails(event, context):
    raise RuntimeError("no")
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sup = start_supervisor(tmp_path_factory.mktemp("urls") / "data")
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def py_function(client, name, handler):
    require((IMAGES / "rootfs-python3.11").is_dir(), f"rootfs-python3.11 not found in {IMAGES}")
    client.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                           Handler=f"app.{handler}", Code={"ZipFile": make_zip({"app.py": APP})},
                           Timeout=10)


def make_public(client, name, **kw):
    client.add_permission(FunctionName=name, StatementId="public-url",
                          Action="lambda:InvokeFunctionUrl", Principal="*",
                          FunctionUrlAuthType="NONE", **kw)


def request(url, method="GET", body=None, headers=None, host=None):
    """(status, headers as a list of pairs, body bytes) of one plain HTTP request."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    path = u.path + (f"?{u.query}" if u.query else "")
    hdrs = dict(headers or {})
    if host:
        hdrs["Host"] = host
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    out = (r.status, r.getheaders(), r.read())
    conn.close()
    return out


def header(pairs, name):
    return [v for k, v in pairs if k.lower() == name]


def test_url_config_lifecycle(client, server):
    py_function(client, "url-echo", "echo_event")
    made = client.create_function_url_config(
        FunctionName="url-echo", AuthType="NONE",
        Cors={"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
              "ExposeHeaders": ["x-made"], "MaxAge": 60})
    assert made["FunctionUrl"].startswith(f"{server.endpoint}/lambda-url/")
    assert made["FunctionArn"].endswith(":function:url-echo")
    assert (made["AuthType"], made["InvokeMode"]) == ("NONE", "BUFFERED")
    got = client.get_function_url_config(FunctionName="url-echo")
    assert got["FunctionUrl"] == made["FunctionUrl"] and got["Cors"]["MaxAge"] == 60
    with pytest.raises(ClientError) as e:
        client.create_function_url_config(FunctionName="url-echo", AuthType="NONE")
    assert error_code(e) == "ResourceConflictException"
    with pytest.raises(ClientError) as e:
        client.create_function_url_config(FunctionName="url-echo", AuthType="NONE", Qualifier="1")
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        client.create_function_url_config(FunctionName="url-echo", AuthType="BASIC")
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        client.create_function_url_config(FunctionName="nobody", AuthType="NONE")
    assert error_code(e) == "ResourceNotFoundException"
    # An alias has its own URL; the list holds both; deleting the alias deletes its URL.
    client.publish_version(FunctionName="url-echo")
    client.create_alias(FunctionName="url-echo", Name="live", FunctionVersion="1")
    a = client.create_function_url_config(FunctionName="url-echo", Qualifier="live",
                                          AuthType="AWS_IAM")
    assert a["FunctionArn"].endswith(":url-echo:live") and a["FunctionUrl"] != made["FunctionUrl"]
    listed = client.list_function_url_configs(FunctionName="url-echo")["FunctionUrlConfigs"]
    assert sorted(x["AuthType"] for x in listed) == ["AWS_IAM", "NONE"]
    client.delete_alias(FunctionName="url-echo", Name="live")
    listed = client.list_function_url_configs(FunctionName="url-echo")["FunctionUrlConfigs"]
    assert [x["FunctionUrl"] for x in listed] == [made["FunctionUrl"]]
    # Deleted, the URL answers 404; a new configuration gets a new id.
    client.delete_function_url_config(FunctionName="url-echo")
    assert request(made["FunctionUrl"])[0] == 404
    with pytest.raises(ClientError) as e:
        client.get_function_url_config(FunctionName="url-echo")
    assert error_code(e) == "ResourceNotFoundException"
    made = client.create_function_url_config(FunctionName="url-echo", AuthType="NONE")
    up = client.update_function_url_config(FunctionName="url-echo", Cors={
        "AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
        "ExposeHeaders": ["x-made"], "MaxAge": 120})
    assert up["Cors"]["MaxAge"] == 120 and up["LastModifiedTime"]


def test_none_url_needs_a_public_policy_then_sends_lambdas_event(client):
    url = client.get_function_url_config(FunctionName="url-echo")["FunctionUrl"]
    status, _, body = request(url)
    assert status == 403, body
    make_public(client, "url-echo")
    status, hdrs, body = request(
        url + "a/b?x=1&x=2&y=h%20i", "POST", body=b'{"k": 1}',
        headers={"Content-Type": "application/json", "X-Custom": "v",
                 "Cookie": "c1=1; c2=2", "User-Agent": "test-agent"})
    assert status == 200, body
    assert header(hdrs, "content-type") == ["application/json"]
    assert header(hdrs, "x-amzn-requestid")
    ev = json.loads(body)
    assert ev["version"] == "2.0" and ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/a/b" and ev["rawQueryString"] == "x=1&x=2&y=h%20i"
    assert ev["queryStringParameters"] == {"x": "1,2", "y": "h i"}
    assert ev["cookies"] == ["c1=1", "c2=2"]
    assert ev["headers"]["x-custom"] == "v" and "cookie" not in ev["headers"]
    assert ev["body"] == '{"k": 1}' and ev["isBase64Encoded"] is False
    ctx = ev["requestContext"]
    assert ctx["http"]["method"] == "POST" and ctx["http"]["path"] == "/a/b"
    assert ctx["http"]["sourceIp"] == "127.0.0.1" and ctx["http"]["userAgent"] == "test-agent"
    assert ctx["accountId"] == "anonymous" and ctx["requestId"] == header(hdrs, "x-amzn-requestid")[0]
    # A binary body arrives base64-encoded.
    status, _, body = request(url, "PUT", body=bytes(range(256)),
                              headers={"Content-Type": "application/octet-stream"})
    ev = json.loads(body)
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == bytes(range(256))
    # The same URL by host name, as Lambda's URLs are.
    url_id = url.rstrip("/").rsplit("/", 1)[1]
    status, _, body = request(url.split("/lambda-url/")[0] + "/by-host?h=1",
                              host=f"{url_id}.lambda-url.{REGION}.localhost")
    assert status == 200, body
    assert json.loads(body)["rawPath"] == "/by-host"
    # Unknown ids are not found; an oversized body is refused before the function runs.
    assert request(url.replace(url_id, "a" * 32))[0] == 404
    assert request(url, "POST", body=b"x" * (6 * 1024 * 1024 + 1))[0] == 413


def test_cors_preflight_and_response_headers(client):
    url = client.get_function_url_config(FunctionName="url-echo")["FunctionUrl"]
    status, hdrs, _ = request(url, "OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert status == 200
    assert header(hdrs, "access-control-allow-origin") == ["https://app.example"]
    assert header(hdrs, "access-control-allow-methods") == ["GET,POST"]
    assert header(hdrs, "access-control-max-age") == ["120"]
    status, hdrs, _ = request(url, headers={"Origin": "https://app.example"})
    assert status == 200 and header(hdrs, "access-control-expose-headers") == ["x-made"]
    status, hdrs, _ = request(url, headers={"Origin": "https://evil.example"})
    assert status == 200 and not header(hdrs, "access-control-allow-origin")


def test_structured_binary_and_failed_answers(client):
    for name, handler in [("url-http", "http"), ("url-bin", "binary"), ("url-fail", "fails")]:
        py_function(client, name, handler)
        client.create_function_url_config(FunctionName=name, AuthType="NONE")
        make_public(client, name)
    urls = {n: client.get_function_url_config(FunctionName=n)["FunctionUrl"]
            for n in ("url-http", "url-bin", "url-fail")}
    status, hdrs, body = request(urls["url-http"] + "p")
    assert (status, body) == (201, b"made /p")
    assert header(hdrs, "x-made") == ["yes"] and header(hdrs, "set-cookie") == ["a=1", "b=2"]
    status, hdrs, body = request(urls["url-bin"])
    assert status == 200 and body == bytes(range(256))
    status, _, body = request(urls["url-fail"])
    assert status == 502 and json.loads(body) == {"Message": "Internal Server Error"}


def test_aws_iam_url_checks_the_signature(client):
    client.update_function_url_config(FunctionName="url-http", AuthType="AWS_IAM")
    url = client.get_function_url_config(FunctionName="url-http")["FunctionUrl"] + "signed"
    assert request(url)[0] == 403
    req = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(req)
    status, _, body = request(url, headers=dict(req.headers))
    assert (status, body) == (201, b"made /signed")
    wrong = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(ACCESS_KEY, "not-the-secret"), "lambda", REGION).add_auth(wrong)
    assert request(url, headers=dict(wrong.headers))[0] == 403


def test_response_stream_url_streams_after_the_prelude(client):
    deploy(client, "url-stream", "rust", "stream-slow")
    client.create_function_url_config(FunctionName="url-stream", AuthType="NONE",
                                      InvokeMode="RESPONSE_STREAM")
    make_public(client, "url-stream")
    url = client.get_function_url_config(FunctionName="url-stream")["FunctionUrl"]
    assert request(url)[0] == 200  # cold start out of the way
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", u.path)
    r = conn.getresponse()
    assert r.status == 200
    # lambda_runtime's prelude set the content type; it is not in the body.
    assert r.getheader("content-type") == "application/octet-stream"
    first = r.read1(64)
    first_at = time.monotonic()
    rest = r.read()
    done_at = time.monotonic()
    conn.close()
    assert first + rest == b"chunk-1 chunk-2"
    assert first.startswith(b"chunk-1")
    # The function sleeps 1 s between its chunks: the first came before that.
    assert done_at - first_at >= 0.5, (first, done_at - first_at)
