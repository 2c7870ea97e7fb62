"""Tags, resource policies, GetAccountSettings and the SDK waiters (issue 15), with
boto3 and the aws CLI against the real supervisor. Control plane only: no sandbox.
"""

import json
import os

import pytest

from supervisor_harness import (REGION, ROLE, Supervisor, aws_lambda, bootstrap_zip,
                                error_code)

try:
    from botocore.exceptions import ClientError
except ImportError:
    if os.environ.get("CI"):
        raise
    print("\nSKIPPED: boto3/botocore not installed (pip install -r tests/python/requirements.txt)")
    pytest.skip("boto3 not installed", allow_module_level=True)

ARN = f"arn:aws:lambda:{REGION}:000000000000:function"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sup = Supervisor(tmp_path_factory.mktemp("meta") / "data").start()
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def create(client, name, **kw):
    return client.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE,
                                  Handler="bootstrap", Code={"ZipFile": bootstrap_zip()}, **kw)


def test_tags_on_create_and_through_tag_calls(client, server):
    create(client, "tagged", Tags={"team": "core", "env": "dev"})
    arn = f"{ARN}:tagged"
    assert client.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "dev"}
    assert client.get_function(FunctionName="tagged")["Tags"] == {"team": "core", "env": "dev"}
    client.tag_resource(Resource=arn, Tags={"env": "prod", "cost": "42"})
    client.untag_resource(Resource=arn, TagKeys=["team", "absent"])
    assert client.list_tags(Resource=arn)["Tags"] == {"env": "prod", "cost": "42"}
    # Refused, and nothing changes: reserved prefix, too many, versions, unknown function.
    for bad in [{"aws:owner": "x"}, {f"k{i}": "" for i in range(49)}]:
        with pytest.raises(ClientError) as e:
            client.tag_resource(Resource=arn, Tags=bad)
        assert error_code(e) == "InvalidParameterValueException", bad
    with pytest.raises(ClientError) as e:
        client.tag_resource(Resource=f"{arn}:1", Tags={"a": "b"})
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        client.list_tags(Resource=f"{ARN}:nobody")
    assert error_code(e) == "ResourceNotFoundException"
    assert client.list_tags(Resource=arn)["Tags"] == {"env": "prod", "cost": "42"}


def test_resource_policy_statements(client):
    create(client, "pol", Publish=True)
    with pytest.raises(ClientError) as e:
        client.get_policy(FunctionName="pol")
    assert error_code(e) == "ResourceNotFoundException"
    out = client.add_permission(FunctionName="pol", StatementId="s3", Action="lambda:InvokeFunction",
                                Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::bucket",
                                SourceAccount="123456789012")
    stmt = json.loads(out["Statement"])
    assert stmt == {
        "Sid": "s3", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction", "Resource": f"{ARN}:pol",
        "Condition": {"StringEquals": {"AWS:SourceAccount": "123456789012"},
                      "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::bucket"}},
    }
    client.add_permission(FunctionName="pol", StatementId="acct", Action="lambda:GetFunction",
                          Principal="210987654321")
    p = client.get_policy(FunctionName="pol")
    doc = json.loads(p["Policy"])
    assert doc["Version"] == "2012-10-17"
    assert [s["Sid"] for s in doc["Statement"]] == ["s3", "acct"]
    assert doc["Statement"][1]["Principal"] == {"AWS": "arn:aws:iam::210987654321:root"}
    # Duplicate sid, stale revision, bad action: refused.
    with pytest.raises(ClientError) as e:
        client.add_permission(FunctionName="pol", StatementId="s3", Action="lambda:*",
                              Principal="*")
    assert error_code(e) == "ResourceConflictException"
    with pytest.raises(ClientError) as e:
        client.add_permission(FunctionName="pol", StatementId="new", Action="lambda:*",
                              Principal="*", RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    with pytest.raises(ClientError) as e:
        client.add_permission(FunctionName="pol", StatementId="new", Action="s3:GetObject",
                              Principal="*")
    assert error_code(e) == "InvalidParameterValueException"
    # A version has its own policy; an unknown qualifier is not found.
    client.add_permission(FunctionName="pol", Qualifier="1", StatementId="v1",
                          Action="lambda:InvokeFunction", Principal="*")
    v1 = json.loads(client.get_policy(FunctionName="pol", Qualifier="1")["Policy"])
    assert [s["Resource"] for s in v1["Statement"]] == [f"{ARN}:pol:1"]
    with pytest.raises(ClientError) as e:
        client.add_permission(FunctionName="pol", Qualifier="7", StatementId="v7",
                              Action="lambda:InvokeFunction", Principal="*")
    assert error_code(e) == "ResourceNotFoundException"
    # Remove checks the revision; the last statement takes the policy with it.
    with pytest.raises(ClientError) as e:
        client.remove_permission(FunctionName="pol", StatementId="acct", RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    client.remove_permission(FunctionName="pol", StatementId="acct",
                             RevisionId=client.get_policy(FunctionName="pol")["RevisionId"])
    client.remove_permission(FunctionName="pol", StatementId="s3")
    with pytest.raises(ClientError) as e:
        client.remove_permission(FunctionName="pol", StatementId="s3")
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        client.get_policy(FunctionName="pol")
    assert error_code(e) == "ResourceNotFoundException"


def test_account_settings_count_functions_and_code(client):
    before = client.get_account_settings()
    create(client, "counted")
    after = client.get_account_settings()
    usage = after["AccountUsage"]
    assert usage["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    size = client.get_function_configuration(FunctionName="counted")["CodeSize"]
    assert usage["TotalCodeSize"] == before["AccountUsage"]["TotalCodeSize"] + size
    limit = after["AccountLimit"]
    assert limit["CodeSizeZipped"] == 52428800 and limit["CodeSizeUnzipped"] == 262144000
    client.put_function_concurrency(FunctionName="counted", ReservedConcurrentExecutions=3)
    later = client.get_account_settings()["AccountLimit"]
    assert later["UnreservedConcurrentExecutions"] == limit["UnreservedConcurrentExecutions"] - 3


def test_sdk_waiters_and_cli_wait(client, server):
    create(client, "waited")
    client.get_waiter("function_active_v2").wait(FunctionName="waited",
                                                  WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    client.update_function_configuration(FunctionName="waited", Timeout=9)
    client.get_waiter("function_updated_v2").wait(FunctionName="waited",
                                                   WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    client.get_waiter("function_exists").wait(FunctionName="waited",
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    aws_lambda(server.endpoint, "wait", "function-active-v2", "--function-name", "waited")
    aws_lambda(server.endpoint, "tag-resource", "--resource", f"{ARN}:waited", "--tags", "via=cli")
    assert "AccountLimit" in aws_lambda(server.endpoint, "get-account-settings")
    assert client.list_tags(Resource=f"{ARN}:waited")["Tags"] == {"via": "cli"}


def test_tags_and_policies_survive_kill9_and_go_with_the_function(client, server):
    """Last in this file: it restarts the server (the module's client is stale after)."""
    create(client, "kept", Tags={"k": "v"})
    client.add_permission(FunctionName="kept", StatementId="p", Action="lambda:InvokeFunction",
                          Principal="*")
    server.kill9()
    server.start()
    again = server.client()
    arn = f"{ARN}:kept"
    assert again.list_tags(Resource=arn)["Tags"] == {"k": "v"}
    assert [s["Sid"] for s in json.loads(again.get_policy(FunctionName="kept")["Policy"])["Statement"]] == ["p"]
    again.delete_function(FunctionName="kept")
    create(again, "kept")
    assert again.list_tags(Resource=arn)["Tags"] == {}
    assert "Tags" not in again.get_function(FunctionName="kept")
    with pytest.raises(ClientError) as e:
        again.get_policy(FunctionName="kept")
    assert error_code(e) == "ResourceNotFoundException"
