"""Every command of the README and docs/*.md, read from the Markdown: run when marked cheap, else checked.

The marker convention and what "checked" means are in tests/doccommands.py and docs/extending.md.
A renamed command, option, Make target, script, module, API method or keyword, or deployment fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import doccommands as dc

BLOCKS = [b for f in dc.doc_files() for b in dc.blocks(f)]
INLINE = [(f, n, cmd) for f in dc.doc_files() for n, cmd in dc.inline_commands(f)]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_docs_have_commands_and_the_readme_is_short():
    readme = (dc.ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert "docs/img/" in readme  # a picture of what it makes
    assert "make demo" in readme and "make test" in readme
    assert sum(b.mode == "run" for b in BLOCKS) >= 2 and len(INLINE) > 20


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode != "skip"], ids=lambda b: b.id)
def test_block_is_checked(block):
    if block.lang == "python":
        dc.check_python(block.text, block.id)
        return
    for line in dc.commands(block.text):
        dc.check_line(line)


@pytest.mark.parametrize("command", [pytest.param(c, id=f"{f.relative_to(dc.ROOT)}:{n}") for f, n, c in INLINE])
def test_inline_command_is_checked(command):
    dc.check_line(command)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode == "run"], ids=lambda b: b.id)
def test_block_marked_run_runs(block, tmp_path):
    env = {**os.environ, "TALKFLOW_DATA_ROOT": str(tmp_path / "data"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)  # as a user's shell: the CLI's own embedded mode
    if block.lang == "python":
        args = [sys.executable, "-c", block.text]
    else:
        args = ["bash", "-euo", "pipefail", "-c", block.text]
    proc = subprocess.run(args, cwd=dc.ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{block.id}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("path", dc.doc_files(), ids=lambda p: str(p.relative_to(dc.ROOT)))
def test_local_links_and_pictures_exist(path):
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.exists(), f"{path.name}: the link {target} leads nowhere"
        if file.suffix in (".png", ".jpg"):
            assert file.stat().st_size < 300_000, f"{target}: {file.stat().st_size} bytes (keep pictures small)"


# -- the checks themselves fail on what has gone stale -----------------------------------------------
@pytest.mark.parametrize("line", [
    "talkflow infer --person ada --text hi",                 # a command that is not there
    "talkflow render --person ada --voice x",                # an option of no command
    "talkflow train (--person NAME | --dataset DIR)",        # in synopsis form too
    "talkflow cache",                                        # a group without its command
    "make tests",                                            # no such target
    "python -m pools.nosuch all",                            # no such module
    "python bench/nosuch.py --seconds 3",                    # no such script
    "python -m pools.setup all --gpu-class a100",            # an option its --help does not show
    "bash scripts/nosuch.sh start",
    "docker build -f docker/Dockerfile.nosuch .",
])
def test_a_stale_shell_command_fails_the_check(line):
    with pytest.raises(AssertionError):
        dc.check_line(line)


@pytest.mark.parametrize("code", [
    "from talkflow.api import Talkflow\ntf = Talkflow()\ntf.infer_video('m', text='x')",
    "from talkflow.api import Talkflow\ntf = Talkflow()\ntf.render('m', txt='x')",
    "from talkflow.api import Talkflow, Talkflowz",
    "from prefect.deployments import run_deployment\nrun_deployment('render-video/render', parameters={})",
])
def test_stale_python_fails_the_check(code):
    with pytest.raises(AssertionError):
        dc.check_python(code, "snippet")


def test_markers_are_read_and_a_skip_needs_a_reason(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent("""\
        <!-- doc-test: run -->
        ```bash
        talkflow --help
        ```

        ```console
        $ talkflow doctor
        ```

        <!-- doc-test: skip (output of a run) -->
        ```sh
        anything
        ```
        """))
    modes = [(b.mode, b.lang) for b in dc.blocks(page)]
    assert modes == [("run", "shell"), ("check", "shell"), ("skip", "shell")]
    assert dc.commands(dc.blocks(page)[1].text) == ["talkflow doctor"]
    page.write_text("<!-- doc-test: skip -->\n```bash\nx\n```\n")
    with pytest.raises(AssertionError, match="reason"):
        dc.blocks(page)
