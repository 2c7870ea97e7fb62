"""Aliases (issue 15): Create/Get/List/Update/DeleteAlias with boto3 and the aws CLI,
invokes by alias (Qualifier and the ARN suffix), and weighted routing between two
versions, checked statistically. Process backend, shell functions.
"""

import os

import pytest

from invoke_harness import deploy, invoke, json_body, start_supervisor
from supervisor_harness import REGION, aws_lambda, error_code

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
    sup = start_supervisor(tmp_path_factory.mktemp("aliases") / "data")
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def two_versions(client):
    """Function `al` with version 1 answering "v1" and version 2 answering "v2"."""
    deploy(client, "al", "shell", "function.slowenv", Environment={"Variables": {"MARK": "v1"}})
    assert client.publish_version(FunctionName="al")["Version"] == "1"
    client.update_function_configuration(FunctionName="al",
                                         Environment={"Variables": {"MARK": "v2"}})
    assert client.publish_version(FunctionName="al")["Version"] == "2"
    return "al"


def test_alias_lifecycle_as_lambda_shapes_it(client, two_versions):
    a = client.create_alias(FunctionName="al", Name="prod", FunctionVersion="1",
                            Description="production")
    assert a["AliasArn"] == f"{ARN}:al:prod"
    assert (a["Name"], a["FunctionVersion"], a["Description"]) == ("prod", "1", "production")
    assert "RoutingConfig" not in a and a["RevisionId"]
    assert client.get_alias(FunctionName="al", Name="prod")["RevisionId"] == a["RevisionId"]
    # The configuration through the alias is version 1's, under the alias's ARN.
    c = client.get_function_configuration(FunctionName="al", Qualifier="prod")
    assert (c["Version"], c["FunctionArn"]) == ("1", f"{ARN}:al:prod")
    client.create_alias(FunctionName="al", Name="dev", FunctionVersion="$LATEST")
    names = [x["Name"] for x in client.list_aliases(FunctionName="al")["Aliases"]]
    assert names == ["dev", "prod"]
    only1 = client.list_aliases(FunctionName="al", FunctionVersion="1")["Aliases"]
    assert [x["Name"] for x in only1] == ["prod"]
    page = client.list_aliases(FunctionName="al", MaxItems=1)
    assert len(page["Aliases"]) == 1 and page["NextMarker"]
    # A stale RevisionId is refused; the current one moves the alias.
    with pytest.raises(ClientError) as e:
        client.update_alias(FunctionName="al", Name="prod", FunctionVersion="2",
                            RevisionId="not-the-revision")
    assert error_code(e) == "PreconditionFailedException"
    u = client.update_alias(FunctionName="al", Name="prod", FunctionVersion="2",
                            RevisionId=a["RevisionId"])
    assert u["FunctionVersion"] == "2" and u["RevisionId"] != a["RevisionId"]
    client.update_alias(FunctionName="al", Name="prod", FunctionVersion="1")
    client.delete_alias(FunctionName="al", Name="dev")
    with pytest.raises(ClientError) as e:
        client.get_alias(FunctionName="al", Name="dev")
    assert error_code(e) == "ResourceNotFoundException"


def test_bad_aliases_are_refused_and_store_nothing(client, two_versions):
    cases = [
        (dict(Name="ghost", FunctionVersion="9"), "ResourceNotFoundException"),
        (dict(Name="123", FunctionVersion="1"), "InvalidParameterValueException"),
        (dict(Name="w", FunctionVersion="1",
              RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}}),
         "InvalidParameterValueException"),
        (dict(Name="w", FunctionVersion="$LATEST",
              RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}}),
         "InvalidParameterValueException"),
        (dict(Name="w", FunctionVersion="1",
              RoutingConfig={"AdditionalVersionWeights": {"9": 0.5}}),
         "ResourceNotFoundException"),
    ]
    for params, want in cases:
        with pytest.raises(ClientError) as e:
            client.create_alias(FunctionName="al", **params)
        assert error_code(e) == want, params
    names = {x["Name"] for x in client.list_aliases(FunctionName="al")["Aliases"]}
    assert not names & {"ghost", "123", "w"}
    client.create_alias(FunctionName="al", Name="dup", FunctionVersion="1")
    with pytest.raises(ClientError) as e:
        client.create_alias(FunctionName="al", Name="dup", FunctionVersion="2")
    assert error_code(e) == "ResourceConflictException"
    # A version an alias routes to cannot be deleted.
    with pytest.raises(ClientError) as e:
        client.delete_function(FunctionName="al", Qualifier="1")
    assert error_code(e) == "ResourceConflictException"
    assert "dup" in e.value.response["Error"]["Message"]
    client.delete_alias(FunctionName="al", Name="dup")
    with pytest.raises(ClientError) as e:
        invoke(client, "al", Qualifier="no-such-alias")
    assert error_code(e) == "ResourceNotFoundException"


def test_invoke_by_alias_runs_its_version(client, two_versions):
    client.create_alias(FunctionName="al", Name="live", FunctionVersion="1")
    for name, kw in [("al", {"Qualifier": "live"}), (f"{ARN}:al:live", {})]:
        r, body, _ = invoke(client, name, **kw)
        assert json_body(body) == "v1"
        assert r["ExecutedVersion"] == "1"
    client.update_alias(FunctionName="al", Name="live", FunctionVersion="2")
    r, body, _ = invoke(client, "al", Qualifier="live")
    assert (json_body(body), r["ExecutedVersion"]) == ("v2", "2")


def test_weighted_routing_splits_invokes(client, two_versions):
    client.create_alias(FunctionName="al", Name="canary", FunctionVersion="1",
                        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
    n, to2 = 200, 0
    for _ in range(n):
        r, body, _ = invoke(client, "al", Qualifier="canary")
        version = r["ExecutedVersion"]
        # What ran is what the header says.
        assert json_body(body) == {"1": "v1", "2": "v2"}[version]
        to2 += version == "2"
    # Binomial(200, 0.3): mean 60, standard deviation 6.5; this is ±4.6 of them.
    assert 30 <= to2 <= 90, to2
    # Weight 0 sends nothing to version 2; weight 1 everything.
    for weight, want in [(0.0, "1"), (1.0, "2")]:
        client.update_alias(FunctionName="al", Name="canary",
                            RoutingConfig={"AdditionalVersionWeights": {"2": weight}})
        seen = {invoke(client, "al", Qualifier="canary")[0]["ExecutedVersion"] for _ in range(20)}
        assert seen == {want}, (weight, seen)


def test_aws_cli_alias_commands(server, two_versions):
    def aws(*args):
        return aws_lambda(server.endpoint, *args)

    made = aws("create-alias", "--function-name", "al", "--name", "cli",
               "--function-version", "2")
    assert made["AliasArn"].endswith(":al:cli")
    assert aws("get-alias", "--function-name", "al", "--name", "cli")["FunctionVersion"] == "2"
    listed = aws("list-aliases", "--function-name", "al")["Aliases"]
    assert "cli" in [a["Name"] for a in listed]
    aws("delete-alias", "--function-name", "al", "--name", "cli")
