"""Layers (issue 15): PublishLayerVersion and the other layer calls with boto3 and the
aws CLI; functions naming up to five layer versions get them merged in order into a
read-only /opt (process backend here; test_appliance.py runs one in a microVM).
"""

import os

import pytest

from invoke_harness import (IMAGES, LAYER_TOOLS, invoke, json_body, layer_reader_zip,
                            start_supervisor)
from supervisor_harness import REGION, ROLE, aws_lambda, error_code, make_zip, require

try:
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3/botocore not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

ARN = f"arn:aws:lambda:{REGION}:000000000000"

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sup = start_supervisor(tmp_path_factory.mktemp("layers") / "data")
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def two_layers(client):
    first = client.publish_layer_version(
        LayerName="tools", Description="first", CompatibleRuntimes=["provided.al2023"],
        Content={"ZipFile": make_zip(LAYER_TOOLS)})
    second = client.publish_layer_version(
        LayerName="overrides", Content={"ZipFile": make_zip({
            "etc/shared.txt": (b"second", 0o644),
        })})
    return first["LayerVersionArn"], second["LayerVersionArn"]


def shell_function(client, name, layers, **kw):
    return client.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE,
                                  Handler="function.handler",
                                  Code={"ZipFile": layer_reader_zip()},
                                  Layers=layers, Timeout=10, **kw)


def test_publish_get_and_list_layers(client, two_layers):
    first, second = two_layers
    assert first == f"{ARN}:layer:tools:1" and second == f"{ARN}:layer:overrides:1"
    again = client.publish_layer_version(LayerName="tools", Content={"ZipFile": make_zip({
        "bin/tool.sh": (b"#!/bin/sh\necho tool-v2\n", 0o755)})})
    assert again["Version"] == 2 and again["LayerArn"] == f"{ARN}:layer:tools"
    got = client.get_layer_version(LayerName="tools", VersionNumber=1)
    assert got["Description"] == "first" and got["CompatibleRuntimes"] == ["provided.al2023"]
    assert got["Content"]["CodeSize"] > 0 and got["Content"]["CodeSha256"]
    by_arn = client.get_layer_version_by_arn(Arn=first)
    assert by_arn["LayerVersionArn"] == first
    versions = client.list_layer_versions(LayerName="tools")["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    layers = {x["LayerName"]: x for x in client.list_layers()["Layers"]}
    assert set(layers) == {"tools", "overrides"}
    assert layers["tools"]["LatestMatchingVersion"]["Version"] == 2
    with pytest.raises(ClientError) as e:
        client.get_layer_version(LayerName="tools", VersionNumber=9)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        client.publish_layer_version(LayerName="bad", Content={"ZipFile": b"not a zip"})
    assert error_code(e) == "InvalidParameterValueException"


def test_layers_merge_in_order_into_read_only_opt(client, two_layers):
    first, second = two_layers
    conf = shell_function(client, "with-layers", [first, second])
    assert [x["Arn"] for x in conf["Layers"]] == [first, second]
    assert all(x["CodeSize"] > 0 for x in conf["Layers"])
    out = json_body(invoke(client, "with-layers")[1])
    # /opt/bin is on PATH; the later layer's file wins; the earlier one's others stay.
    assert out == {"tool": "tool-from-first", "a": "only-in-first", "shared": "second",
                   "opt": "read-only"}, out
    # The other order: the first layer's copy wins.
    client.update_function_configuration(FunctionName="with-layers", Layers=[second, first])
    assert json_body(invoke(client, "with-layers")[1])["shared"] == "first"
    # No layers: nothing in /opt.
    client.update_function_configuration(FunctionName="with-layers", Layers=[])
    out = json_body(invoke(client, "with-layers")[1])
    assert "No such file" in out["a"] and "tool-from-first" not in out["tool"], out


def test_a_python_function_imports_a_module_from_a_layer(client):
    require((IMAGES / "rootfs-python3.11").is_dir(), f"rootfs-python3.11 not found in {IMAGES}")
    lib = client.publish_layer_version(
        LayerName="pylib", CompatibleRuntimes=["python3.11"],
        Content={"ZipFile": make_zip({
            "python/layer_helper.py": b"def greet(who):\n    return 'hello ' + who + ' from a layer'\n",
        })})
    app = b"import layer_helper\n\ndef handler(event, context):\n    return layer_helper.greet(event['who'])\n"
    client.create_function(FunctionName="py-layer", Runtime="python3.11", Role=ROLE,
                           Handler="app.handler", Code={"ZipFile": make_zip({"app.py": app})},
                           Layers=[lib["LayerVersionArn"]], Timeout=10)
    r, body, _ = invoke(client, "py-layer", b'{"who": "py"}')
    assert "FunctionError" not in r, body
    assert json_body(body) == "hello py from a layer"


def test_bad_layer_references_are_refused(client, two_layers):
    first, _ = two_layers
    cases = [
        [f"{ARN}:layer:tools:99"],
        [f"{ARN}:layer:nothing:1"],
        ["arn:aws:lambda:us-east-1:111111111111:layer:theirs:1"],
        [first] * 6,
    ]
    for layers in cases:
        with pytest.raises(ClientError) as e:
            shell_function(client, "refused", layers)
        assert error_code(e) == "InvalidParameterValueException", layers
    with pytest.raises(ClientError) as e:
        client.get_function(FunctionName="refused")
    assert error_code(e) == "ResourceNotFoundException"


def test_a_deleted_layer_version_stays_for_its_functions(client, server):
    made = client.publish_layer_version(LayerName="short-lived", Content={"ZipFile": make_zip({
        "bin/tool.sh": (b"#!/bin/sh\necho short-lived\n", 0o755)})})
    shell_function(client, "keeps-layer", [made["LayerVersionArn"]])
    client.delete_layer_version(LayerName="short-lived", VersionNumber=1)
    client.delete_layer_version(LayerName="short-lived", VersionNumber=1)  # gone: still 204
    with pytest.raises(ClientError) as e:
        client.get_layer_version(LayerName="short-lived", VersionNumber=1)
    assert error_code(e) == "ResourceNotFoundException"
    # A new revision starts a new sandbox, which unpacks the kept package again.
    client.update_function_configuration(FunctionName="keeps-layer", Timeout=11)
    assert json_body(invoke(client, "keeps-layer")[1])["tool"] == "short-lived"
    with pytest.raises(ClientError) as e:
        shell_function(client, "late", [made["LayerVersionArn"]])
    assert error_code(e) == "InvalidParameterValueException"


def test_aws_cli_layer_commands(server, tmp_path):
    z = tmp_path / "layer.zip"
    z.write_bytes(make_zip({"etc/cli.txt": (b"cli", 0o644)}))

    def aws(*args):
        return aws_lambda(server.endpoint, *args)

    made = aws("publish-layer-version", "--layer-name", "from-cli", "--zip-file", f"fileb://{z}")
    assert made["Version"] == 1
    assert aws("list-layer-versions", "--layer-name", "from-cli")["LayerVersions"][0]["Version"] == 1
    aws("delete-layer-version", "--layer-name", "from-cli", "--version-number", "1")
