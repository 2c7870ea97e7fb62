"""Two frontends sharing their registry through a real three-member etcd cluster
(`supervisor serve --etcd`), driven with boto3: what one acknowledges the other serves,
a killed frontend loses nothing, and etcd's quorum decides availability."""

import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from etcd_harness import EtcdCluster, all_values, gateway, key_values, master_key_file
from invoke_harness import deploy, invoke, start_supervisor

SHELL = "function.handler"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def frontends(etcd, tmp_path_factory):
    work = tmp_path_factory.mktemp("frontends")
    key = master_key_file(work / "master.key")
    args = ("--etcd", etcd.urls, "--master-key-file", str(key), "--member-ttl-secs", "3")
    a = start_supervisor(work / "a", *args)
    b = start_supervisor(work / "b", *args)
    yield a, b
    for s in (a, b):
        s.stop()


def code_objects(sup):
    return sorted(p.name for p in (sup.data_dir / "code").glob("*.code"))


def error_code(exc):
    return exc.value.response["Error"]["Code"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_a_function_created_on_one_frontend_is_served_by_the_other(frontends):
    a, b = frontends
    ca, cb = a.client(), b.client()
    created = deploy(ca, "shared-echo", "shell", SHELL, Description="v1")
    # The upload was acknowledged only once the other frontend held a copy.
    assert set(code_objects(a)) & set(code_objects(b)), (code_objects(a), code_objects(b))
    got = cb.get_function(FunctionName="shared-echo")["Configuration"]
    assert got["CodeSha256"] == created["CodeSha256"]
    assert got["RevisionId"] == created["RevisionId"]
    assert "shared-echo" in [f["FunctionName"] for f in cb.list_functions()["Functions"]]

    cb.update_function_configuration(FunctionName="shared-echo", Description="v2")
    assert ca.get_function_configuration(FunctionName="shared-echo")["Description"] == "v2"
    published = cb.publish_version(FunctionName="shared-echo")["Version"]
    assert [v["Version"] for v in ca.list_versions_by_function(FunctionName="shared-echo")["Versions"]] \
        == ["$LATEST", published]

    for client in (cb, ca):
        r, body, _ = invoke(client, "shared-echo", b'{"x":1}')
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body


def test_the_same_name_created_on_both_frontends_at_once_exists_once(frontends):
    a, b = frontends
    outcomes = []

    def create(sup, desc):
        try:
            deploy(sup.client(), "shared-race", "shell", SHELL, Description=desc)
            outcomes.append(("created", desc))
        except ClientError as e:
            outcomes.append((e.response["Error"]["Code"], desc))

    threads = [threading.Thread(target=create, args=(s, s.data_dir.name)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = sorted(k for k, _ in outcomes)
    assert kinds == ["ResourceConflictException", "created"], outcomes
    winner = next(d for k, d in outcomes if k == "created")
    for sup in (a, b):
        assert sup.client().get_function(FunctionName="shared-race")["Configuration"]["Description"] == winner


def test_reserved_concurrency_set_on_one_frontend_throttles_on_the_other(frontends):
    a, b = frontends
    deploy(a.client(), "shared-reserved", "shell", SHELL)
    a.client().put_function_concurrency(FunctionName="shared-reserved", ReservedConcurrentExecutions=0)
    # The other frontend learns of it from etcd's watch, without being asked anything.
    deadline = time.time() + 10
    while True:
        try:
            invoke(b.client(), "shared-reserved")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "TooManyRequestsException", e.response
            break
        assert time.time() < deadline, "the other frontend kept invoking a function reserved at 0"
        time.sleep(0.2)


def test_a_killed_frontend_loses_nothing_it_acknowledged(frontends):
    a, b = frontends
    deploy(a.client(), "shared-survivor", "shell", SHELL)
    a.kill9()
    try:
        r, body, _ = invoke(b.client(), "shared-survivor", b'{"after":"kill"}')
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    finally:
        a.start()
    # Restarted, it rebuilds its registry from etcd.
    names = [f["FunctionName"] for f in a.client().list_functions()["Functions"]]
    assert {"shared-echo", "shared-survivor"} <= set(names), names


def test_etcd_quorum_decides_availability(frontends, etcd):
    a, b = frontends
    one, two = etcd.members[1], etcd.members[2]
    one.kill()
    try:
        deploy(b.client(), "shared-one-down", "shell", SHELL)
        assert a.client().get_function(FunctionName="shared-one-down")
        two.kill()
        started = time.time()
        with pytest.raises(ClientError) as refused:
            deploy(a.client(), "shared-no-quorum", "shell", SHELL)
        assert error_code(refused) == ("ServiceException", 503), refused.value.response
        assert time.time() - started < 30
        with pytest.raises(ClientError) as unread:
            b.client().get_function(FunctionName="shared-one-down")
        assert error_code(unread) == ("ServiceException", 503), unread.value.response
    finally:
        for m in (one, two):
            m.start()
        etcd.wait_healthy(etcd.members)
    # Service resumes by itself; nothing half-done was kept.
    deadline = time.time() + 30
    while True:
        try:
            names = [f["FunctionName"] for f in b.client().list_functions()["Functions"]]
            break
        except ClientError:
            assert time.time() < deadline, "the frontends did not recover with the quorum"
            time.sleep(0.5)
    assert "shared-one-down" in names and "shared-no-quorum" not in names, names
    deploy(b.client(), "shared-no-quorum", "shell", SHELL)
    r, body, _ = invoke(a.client(), "shared-no-quorum")
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body


def frontend_leases(member):
    """The etcd leases the frontends' registrations are attached to."""
    return {kv["lease"] for kv in key_values(member, "/lambda-microvm/members/frontend/")}


def revoke(member, lease):
    gateway(member, "/v3/lease/revoke", {"ID": lease})


def test_an_invoke_that_finds_its_frontends_lease_gone_waits_for_the_new_one(frontends, etcd):
    """A frontend's lease gone (as after etcd was away longer than the TTL): an invoke
    needing a concurrency slot under it waits for the frontend to register anew instead
    of failing with 503."""
    a, _ = frontends
    deploy(a.client(), "lease-gone", "shell", SHELL)
    invoke(a.client(), "lease-gone")
    time.sleep(0.5)  # past the slot's reuse window: the next invoke asks etcd
    # Every frontend's (this module may have started more than these two).
    leases = frontend_leases(etcd.members[0])
    assert len(leases) >= 2, leases
    for lease in leases:
        revoke(etcd.members[0], lease)
    r, body, _ = invoke(a.client(), "lease-gone")
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    # Both live frontends are registered again, under new leases.
    deadline = time.monotonic() + 10
    while len(frontend_leases(etcd.members[0]) - leases) < 2:
        assert time.monotonic() < deadline, "the frontends did not register anew"
        time.sleep(0.2)


def test_migrate_moves_a_single_host_into_the_cluster(etcd, tmp_path):
    """`supervisor migrate --to-etcd`: a stopped single host's functions, versions and
    settings become the shared registry of new frontends, code included, and an Event
    still queued on it runs on one of them, with its request id."""
    from invoke_harness import logged
    from supervisor_harness import supervisor_binary
    import subprocess

    single = start_supervisor(tmp_path / "single")
    c = single.client()
    deploy(c, "moved", "shell", SHELL, Description="from one host")
    version = c.publish_version(FunctionName="moved")["Version"]
    c.put_function_concurrency(FunctionName="moved", ReservedConcurrentExecutions=3)
    c.create_alias(FunctionName="moved", Name="live", FunctionVersion=version)
    c.tag_resource(Resource=c.get_function(FunctionName="moved")["Configuration"]["FunctionArn"],
                   Tags={"team": "a"})
    # An Event accepted, then the host killed before it could finish (a 1 s function).
    deploy(c, "moved-event", "shell", "function.slow")
    r = c.invoke(FunctionName="moved-event", InvocationType="Event", Payload=b'{"ev": 1}')
    assert r["StatusCode"] == 202
    ended = f"END RequestId: {r['ResponseMetadata']['RequestId']}"
    single.kill9()
    assert ended not in logged(single, "moved-event", ended, timeout=0.1)

    prefix = "/migrated"
    argv = [str(supervisor_binary()), "migrate", "--data-dir", str(tmp_path / "single"),
            "--to-etcd", etcd.urls, "--etcd-prefix", prefix]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "and 1 queued Events" in done.stderr, done.stderr
    again = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "already holds entries" in again.stderr, again.stderr

    shared = ("--etcd", etcd.urls, "--etcd-prefix", prefix,
              "--master-key-file", str(tmp_path / "single" / "master.key"))
    first = start_supervisor(tmp_path / "single", *shared)
    other = start_supervisor(tmp_path / "other", *shared)
    try:
        co = other.client()
        conf = co.get_function(FunctionName="moved")
        assert conf["Configuration"]["Description"] == "from one host"
        assert conf["Concurrency"]["ReservedConcurrentExecutions"] == 3
        assert conf["Tags"] == {"team": "a"}
        assert co.get_alias(FunctionName="moved", Name="live")["FunctionVersion"] == version
        # The new frontend fetches the code from the one holding it.
        r, body, _ = invoke(co, "moved", Qualifier="live")
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
        deadline = time.monotonic() + 30
        while not any(ended in logged(s, "moved-event", ended, timeout=0.1) for s in (first, other)):
            assert time.monotonic() < deadline, "the migrated Event did not run"
            time.sleep(0.5)
    finally:
        first.stop()
        other.stop()


def burst(frontends, name, n=20):
    """`n` parallel invokes of `name`, alternating between `frontends`: the windows the
    function measured itself, the 429 error bodies, and any other error."""
    import json

    windows, throttled, other = [], [], []
    lock = threading.Lock()

    def call(sup):
        try:
            r, body, _ = invoke(sup.client(), name)
            doc = json.loads(body)
            with lock:
                windows.append((doc["start"], doc["end"]))
        except ClientError as e:
            with lock:
                (throttled if e.response["Error"]["Code"] == "TooManyRequestsException"
                 else other).append(e.response)

    threads = [threading.Thread(target=call, args=(frontends[i % len(frontends)],))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not other, other
    assert len(windows) + len(throttled) == n
    return windows, throttled


def peak(windows):
    """The most windows open at once."""
    edges = sorted([(s, 1) for s, _ in windows] + [(e, -1) for _, e in windows],
                   key=lambda x: (x[0], x[1]))
    running = top = 0
    for _, d in edges:
        running += d
        top = max(top, running)
    return top


def test_reserved_concurrency_holds_across_frontends(frontends):
    """Reserved at 5, 20 parallel invokes split over both frontends: at most 5 run at
    once, as the functions themselves measure, and the others get Lambda's 429."""
    a, b = frontends
    deploy(a.client(), "shared-five", "shell", "function.window", Timeout=30)
    a.client().put_function_concurrency(FunctionName="shared-five", ReservedConcurrentExecutions=5)
    assert b.client().get_function(FunctionName="shared-five")["Concurrency"] == \
        {"ReservedConcurrentExecutions": 5}
    time.sleep(1)  # the other frontend's caches follow etcd's watch
    windows, throttled = burst(frontends, "shared-five")
    assert 1 <= peak(windows) <= 5, (peak(windows), windows)
    assert len(throttled) >= 10, (len(windows), len(throttled))
    assert all(t["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded" for t in throttled), throttled[0]


def test_the_account_limit_holds_across_frontends(etcd, tmp_path):
    """An account limit of 6 (`--account-concurrency`) on frontends whose hosts each run
    20: 20 parallel invokes of a function without a reservation, split over both, never
    run more than 6 at once; the others get Lambda's account-limit 429. Reservations
    are carved from the same limit, checked against every frontend's."""
    key = master_key_file(tmp_path / "master.key")
    args = ("--etcd", etcd.urls, "--etcd-prefix", "/account-limit", "--master-key-file", str(key),
            "--member-ttl-secs", "3", "--host-concurrency", "20", "--account-concurrency", "6")
    pair = [start_supervisor(tmp_path / n, *args) for n in ("a", "b")]
    try:
        a, b = pair
        deploy(a.client(), "account-six", "shell", "function.window", Timeout=30)
        windows, throttled = burst(pair, "account-six")
        assert 1 <= peak(windows) <= 6, (peak(windows), windows)
        assert len(throttled) >= 8, (len(windows), len(throttled))
        assert all(t["Reason"] == "ConcurrentInvocationLimitExceeded" for t in throttled), throttled[0]
        assert b.client().get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 6
        # All 6 may be reserved (Lambda keeps a tenth unreserved: none of 6): 4 through
        # one frontend, then 3 through the other is one too many.
        deploy(a.client(), "account-other", "shell", SHELL)
        a.client().put_function_concurrency(FunctionName="account-six", ReservedConcurrentExecutions=4)
        with pytest.raises(ClientError) as over:
            b.client().put_function_concurrency(FunctionName="account-other",
                                                ReservedConcurrentExecutions=3)
        assert error_code(over) == ("InvalidParameterValueException", 400)
        b.client().put_function_concurrency(FunctionName="account-other", ReservedConcurrentExecutions=2)
    finally:
        for s in pair:
            s.stop()


def test_snapshots_compact_the_log_and_a_new_frontend_starts_from_one(etcd, tmp_path):
    """With a snapshot every 5 entries, 12 changes leave a snapshot and at most 5 log
    entries behind it in etcd; a frontend started afterwards has every function, and
    so does one that followed all along."""
    key = master_key_file(tmp_path / "master.key")
    prefix = "/compacted"
    args = ("--etcd", etcd.urls, "--etcd-prefix", prefix, "--master-key-file", str(key),
            "--member-ttl-secs", "3", "--registry-snapshot-every", "5")
    started = [start_supervisor(tmp_path / n, *args) for n in ("a", "b")]
    try:
        a, b = started
        for i in range(12):
            deploy(a.client(), f"compact-{i}", "shell", SHELL)
        a.client().delete_function(FunctionName="compact-0")
        keys = [k.decode() for k in all_values(etcd.members[0], prefix + "/registry/")]
        log = sorted(int(k.rsplit("/", 1)[1]) for k in keys if "/registry/log/" in k)
        snapshots = {k.split("/registry/snapshot/")[1].split("/")[0]
                     for k in keys if "/registry/snapshot/" in k}
        assert len(snapshots) == 1, keys
        (at,) = snapshots
        assert int(at) % 5 == 0 and int(at) >= 10, at
        assert log and log[0] > int(at) - 5 and len(log) <= 9, log
        c = start_supervisor(tmp_path / "c", *args)
        started.append(c)
        want = {f"compact-{i}" for i in range(1, 12)}
        for sup in (c, b):
            names = {f["FunctionName"] for f in sup.client().list_functions()["Functions"]}
            assert names == want, (sup.data_dir.name, sorted(names ^ want))
        r, body, _ = invoke(c.client(), "compact-11")
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    finally:
        for s in started:
            s.stop()


def test_an_event_accepted_by_a_frontend_that_dies_runs_on_another(frontends):
    """The Event queue lives in etcd: the frontend that took an Event is killed while
    the Event runs there; its claim lapses with its lease and the other frontend runs
    the Event again, with the same request id (at least once, as on Lambda)."""
    from invoke_harness import logged

    a, b = frontends
    deploy(a.client(), "shared-event", "shell", "function.linger", Timeout=30)
    b.client().get_function(FunctionName="shared-event")
    r = a.client().invoke(FunctionName="shared-event", InvocationType="Event", Payload=b'{"ev":1}')
    assert r["StatusCode"] == 202
    request_id = r["ResponseMetadata"]["RequestId"]
    started = f"START RequestId: {request_id}"
    assert started in logged(a, "shared-event", started, timeout=20)
    a.kill9()
    try:
        ended = f"END RequestId: {request_id}"
        assert ended in logged(b, "shared-event", ended, timeout=60)
    finally:
        a.start()


def test_etcd_over_tls_with_client_certificates(tmp_path):
    """`https://` endpoints: the frontend proves itself with a client certificate from
    etcd's CA; one from another CA is refused at start with a clear error."""
    from etcd_harness import EtcdTls
    from supervisor_harness import Supervisor

    tls = EtcdTls(tmp_path / "tls")
    etcd = EtcdCluster(tmp_path / "etcd-tls", size=1, tls=tls).start()
    key = master_key_file(tmp_path / "master.key")
    try:
        sup = start_supervisor(tmp_path / "tls-frontend", "--etcd", etcd.urls,
                               "--master-key-file", str(key), *tls.frontend_args())
        try:
            deploy(sup.client(), "over-tls", "shell", SHELL)
            r, body, _ = invoke(sup.client(), "over-tls")
            assert r["StatusCode"] == 200 and "FunctionError" not in r, body
        finally:
            sup.stop()
        rogue = Supervisor(tmp_path / "rogue-frontend", extra_args=[
            "--isolation", "process", "--etcd", etcd.urls, "--master-key-file", str(key),
            *tls.frontend_args(tls.rogue)])
        with pytest.raises(RuntimeError) as refused:
            rogue.start(timeout=30)
        assert "reading the shared registry from etcd" in str(refused.value), \
            str(refused.value)[-2000:]
    finally:
        etcd.stop()


def test_etcd_holds_nothing_in_plaintext(frontends, etcd):
    """Registry entries and Events are sealed before they reach etcd: neither a
    function's environment nor an Event's payload can be read from etcd's data."""
    a, _ = frontends
    canary = "canary-7d41f0e2"
    deploy(a.client(), "shared-sealed", "shell", "function.linger", Timeout=30,
           Environment={"Variables": {"TOKEN": canary}})
    r = a.client().invoke(FunctionName="shared-sealed", InvocationType="Event",
                          Payload=json.dumps({"secret": canary}).encode())
    assert r["StatusCode"] == 202
    values = all_values(etcd.members[0], "/lambda-microvm/")
    assert any(k.startswith(b"/lambda-microvm/registry/log/") for k in values), list(values)[:5]
    assert any(k.startswith(b"/lambda-microvm/events/") for k in values), list(values)[:20]
    leaked = [k for k, v in values.items() if canary.encode() in v or b"shared-sealed" in v]
    assert not leaked, leaked
