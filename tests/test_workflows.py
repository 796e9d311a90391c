"""The GitHub Actions workflows are linted, and the GPU one can only ever run trusted code.

Two linters, both pinned in requirements.txt and run offline: check-jsonschema validates every
workflow against GitHub's workflow schema (vendored in the package), and zizmor audits them for
the known security mistakes (dangerous triggers, unpinned actions, credentials left on disk,
template injection, excessive permissions). The tests below the linters state the rules of the
self-hosted GPU runner directly, because a linter cannot know which runner is self-hosted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def _load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on:` as the boolean True
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def test_there_are_a_pages_and_a_gpu_workflow():
    assert {p.name for p in WORKFLOWS} >= {"pages.yml", "gpu.yml"}


def test_workflows_match_the_github_workflow_schema():
    run = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_zizmor_finds_nothing_in_the_workflows():
    run = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", "--format", "plain", *map(str, WORKFLOWS)],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_zizmor_would_catch_a_pull_request_target_trigger(tmp_path):
    """The linter is not a no-op: the same GPU workflow with a dangerous trigger fails it."""
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    text = (ROOT / ".github" / "workflows" / "gpu.yml").read_text()
    assert "  workflow_dispatch:\n" in text
    (folder / "gpu.yml").write_text(text.replace("  workflow_dispatch:\n", "  workflow_dispatch:\n  pull_request_target:\n"))
    run = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", str(folder)], capture_output=True, text=True)
    assert run.returncode != 0 and "dangerous-triggers" in run.stdout + run.stderr


def test_the_gpu_runner_only_runs_trusted_code_with_no_secrets():
    workflow = _load(ROOT / ".github" / "workflows" / "gpu.yml")
    triggers = set(workflow["on"])
    assert not triggers & {"pull_request", "pull_request_target", "issue_comment", "workflow_run"}, (
        f"a self-hosted runner must never run code from a pull request; triggers: {sorted(triggers)}"
    )
    assert workflow["permissions"] == {"contents": "read"}
    text = (ROOT / ".github" / "workflows" / "gpu.yml").read_text()
    assert "secrets." not in text and "secrets:" not in text
    for name, job in workflow["jobs"].items():
        assert set(job["runs-on"]) == {"self-hosted", "gpu"}, name
        assert job["if"] == "github.repository == 'gmcourse/gmcourse'", f"{name} must not run in forks"
        assert "permissions" not in job or job["permissions"] == {"contents": "read"}, name


def test_the_gpu_workflow_runs_the_tests_and_the_full_size_book_and_keeps_the_timings():
    steps = _load(ROOT / ".github" / "workflows" / "gpu.yml")["jobs"]["gpu"]["steps"]
    runs = [(step.get("run", ""), step.get("env", {})) for step in steps]
    assert any(run.startswith("make test") for run, _ in runs)
    assert any(run == "make book" and env.get("GMCOURSE_SCALE") == "full" for run, env in runs)
    uploads = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and "timings" in uploads[0]["with"]["path"]


def test_pages_workflow_builds_on_push_to_main_and_deploys_with_the_pages_actions():
    workflow = _load(ROOT / ".github" / "workflows" / "pages.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    uses = [step.get("uses", "").split("@")[0] for step in build["steps"]]
    assert "actions/upload-pages-artifact" in uses
    assert any(step.get("run") == "make book" for step in build["steps"])
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [step.get("uses", "").split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit(path):
    for job in _load(path)["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                ref = step["uses"].split("@", 1)[1]
                assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), f"{path.name}: {step['uses']}"
