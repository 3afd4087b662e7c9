"""The sandbox stands apart: it imports nothing of ours, and its package docstring's examples run."""

import json
import os
import subprocess
import sys
import textwrap

import sandbox

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run in a fresh interpreter: this test process has long since imported the connector.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
import sandbox
names = [m.name for m in pkgutil.walk_packages(sandbox.__path__, "sandbox.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"file": sandbox.__file__, "walked": names,
                  "new": sorted(set(sys.modules) - before)}))
"""


def _import_every_sandbox_module() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_sandbox_imports_nothing_of_ours_and_only_the_standard_library():
    seen = _import_every_sandbox_module()
    assert seen["file"].startswith(os.path.join(ROOT, "sandbox"))
    assert {
        "sandbox.amocrm",
        "sandbox.bitrix24",
        "sandbox.bitrix24.methods",
        "sandbox.data",
        "sandbox.httpbase",
    } <= set(seen["walked"])
    tops = {name.split(".")[0] for name in seen["new"]}
    assert not tops & {"connector", "adapters"}, sorted(
        n for n in seen["new"] if n.split(".")[0] in ("connector", "adapters")
    )
    assert tops - {"sandbox"} <= set(sys.stdlib_module_names), sorted(
        tops - {"sandbox"} - set(sys.stdlib_module_names)
    )


def _examples(doc: str) -> list[str]:
    """The indented code blocks of a docstring, in order."""
    blocks, current = [], []
    for line in doc.splitlines():
        if line.startswith("    "):
            current.append(line)
        elif not line.strip() and current:
            current.append("")
        elif current:
            blocks.append(textwrap.dedent("\n".join(current)))
            current = []
    if current:
        blocks.append(textwrap.dedent("\n".join(current)))
    return blocks


def test_package_docstring_examples_run():
    blocks = _examples(sandbox.__doc__)
    assert len(blocks) == 4
    namespace: dict = {}
    for block in blocks:  # one namespace: later examples reuse earlier imports
        exec(compile(block, "sandbox/__init__.py docstring", "exec"), namespace)
