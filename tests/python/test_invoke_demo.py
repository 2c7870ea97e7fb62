"""`supervisor demo` (the README's first command): deploys and invokes a sample function."""

import json
import subprocess

from invoke_harness import require_process_backend
from supervisor_harness import supervisor_binary


def test_demo_prints_response_and_report(tmp_path):
    require_process_backend()
    proc = subprocess.run(
        [str(supervisor_binary()), "demo", "--data-dir", str(tmp_path / "demo"),
         "--payload", '{"name": "ci"}'],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    response = next(l for l in lines if l.startswith("response: "))
    body = json.loads(response[len("response: "):])
    assert body["event"] == {"name": "ci"}
    report = next(l for l in lines if l.startswith("REPORT RequestId: "))
    assert "Duration: " in report and "Init Duration: " in report
    assert "isolation" in proc.stderr
