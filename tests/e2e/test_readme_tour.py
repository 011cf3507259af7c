"""The README's "first five minutes" tour, run as written: every ```sh tour``` and
```python tour``` block, in order, against a live server (mock provider), with the CLI under
test as `stacyvm`. Only the server address is changed, from `localhost:7423` to this test's
server. A tour that does not work as written fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import BIN, REPO_ROOT

BLOCK = re.compile(r"```(sh|python) tour\n(.*?)```", re.S)


def tour_blocks() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "README.md").read_text()
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def test_the_readme_tour_runs_as_written(server_factory, tmp_path):
    # A server of its own, so "every sandbox the tour made is gone" is about the tour only.
    server = server_factory({}, name="tour")
    run_tour(server, tmp_path)


def run_tour(server, tmp_path: Path, image: str | None = None) -> None:
    """Runs the tour's blocks against `server` and checks what they printed. `image`, when
    given, stands in for the tour's `alpine:latest` (a machine without internet pulls from a
    local registry instead)."""
    blocks = tour_blocks()
    # The fixture must be what the test assumes: three clients' worth of blocks.
    assert [k for k, _ in blocks] == ["sh", "sh", "python"], blocks
    outputs = [run_block(kind, code, server, tmp_path, image) for kind, code in blocks]
    cli, curl, py = outputs
    assert re.search(r"hello from sb-[0-9a-f]{8}", cli), cli
    assert "\n2\n" in cli and "destroyed" in cli, cli
    assert (tmp_path / "notes.back.txt").read_bytes() == b"line one\nline two\n"
    assert '"stdout":"hello\\nLinux\\n"' in curl and "some bytes" in curl, curl
    assert py == "hello from python\n", py
    # Every sandbox the tour made is gone again.
    with server.http() as h:
        live = [s for s in h.get("/api/v1/sandboxes").json() if s["state"] != "destroyed"]
    assert live == [], live


def run_block(kind: str, code: str, server, cwd: Path, image: str | None = None,
              env_extra: dict | None = None) -> str:
    """One README block, as written but for the server address (and `image`), with the CLI
    under test as `stacyvm`; fails the test unless it exits 0. Returns its stdout."""
    bindir = cwd / "bin"
    if not bindir.exists():
        bindir.mkdir()
        (bindir / "stacyvm").symlink_to(Path(BIN).resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACYVM_")}
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(env_extra or {})
    if image:
        code = code.replace("alpine:latest", image)
    if server is not None:
        code = code.replace("http://localhost:7423", server.base_url)
    if kind == "sh":
        if server is not None:
            # The CLI's default server is localhost:7423: point it at ours the way a user
            # would, with the flag, by shadowing the command.
            code = f'stacyvm() {{ command stacyvm --server {server.base_url} "$@"; }}\n' + code
        argv = ["bash", "-euo", "pipefail", "-c", code]
    else:
        argv = [sys.executable, "-c", code]
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{kind} block failed:\n{code}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r.stdout
