"""The README's path for a machine without Docker ("On a machine without Docker"), run as
written: no Docker daemon (DOCKER_HOST names a socket nobody listens on), no microvm (with
hardware KVM, its data dir is an empty directory, so it has no assets), the
`sh fresh` block's `stacyvm image pull` filling the image store from a registry, then
`stacyvm serve` with `providers.default: auto`, which must pick bwrap; then the whole README
tour against that server. No registry on the internet is reachable here, so a Debian
`docker-registry` on loopback, with a login, serves a busybox image (built from busybox-static)
under the name the tour uses, `<registry>/library/alpine:latest` for `alpine:latest`.

The same server then checks pulls on spawn (docs/images.md): an image the store does not have is
pulled with the configured login, by concurrent spawns too; a missing tag is a 400, and an
unreachable registry a 503, each with a stable code and no host path in the message.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from conftest import BIN, WORK_ROOT, Server, free_port, require_backend
from test_readme_tour import REPO_ROOT, run_block, run_tour

pytestmark = pytest.mark.backend("bwrap")

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
USER, PASSWORD = "stacy", "fresh-machine-pw"
FRESH = re.compile(r"```sh fresh\n(.*?)```", re.S)


def _prerequisites() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "bwrap sandboxes need root"
    for tool in ("bwrap", "htpasswd"):
        if shutil.which(tool) is None:
            return False, f"{tool} is not installed"
    for path in (REGISTRY_BIN, BUSYBOX):
        if not Path(path).is_file():
            return False, f"{path} is missing"
    return True, ""


class Registry:
    """`docker-registry` on a free loopback port with an htpasswd (bcrypt) login."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                                  capture_output=True).stdout
        (root / "htpasswd").write_bytes(htpasswd)
        (root / "config.yml").write_text(yaml.safe_dump({
            "version": 0.1,
            "log": {"level": "error"},
            "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
            "http": {"addr": self.host},
            "auth": {"htpasswd": {"realm": "fresh", "path": str(root / "htpasswd")}},
        }))
        self.log = open(root / "registry.log", "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://{self.host}", auth=(USER, PASSWORD),
                                 timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/v2/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (root / "registry.log").read_text()
            assert time.monotonic() < deadline, "docker-registry not ready after 30s"
            time.sleep(0.05)

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        loc = r.headers["location"]
        sep = "&" if "?" in loc else "?"
        r = self.http.put(f"{loc}{sep}digest={digest}", content=data,
                          headers={"content-type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return digest

    def push_image(self, repo: str, tag: str, layer_tar: bytes) -> None:
        layer = gzip.compress(layer_tar, mtime=0)
        diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }).encode()
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.push_blob(repo, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": self.push_blob(repo, layer), "size": len(layer)}],
        }).encode()
        r = self.http.put(f"/v2/{repo}/manifests/{tag}", content=manifest,
                          headers={"content-type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201, r.text

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def busybox_layer() -> bytes:
    """One layer: busybox-static with a link per applet, /etc/passwd and /etc/group, /tmp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "proc", "dev",
                  "workspace"):
            add(d, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, Path(BUSYBOX).read_bytes())
        applets = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True,
                                 text=True).stdout.split()
        for applet in applets:
            if applet != "bin/busybox":
                add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fresh(_clean_work_root) -> Iterator[dict]:
    ok, why = _prerequisites()
    require_backend("bwrap", ok, why)
    root = WORK_ROOT / "fresh"
    shutil.rmtree(root, ignore_errors=True)
    reg = Registry(root / "registry")
    layer = busybox_layer()
    for tag in ("latest", "v2"):
        reg.push_image("library/alpine", tag, layer)
    try:
        yield {"root": root, "registry": reg, "image": f"{reg.host}/library/alpine:latest"}
    finally:
        reg.stop()


def _cli_env(config: dict, path: Path) -> dict:
    path.write_text(yaml.safe_dump(config))
    return {"STACYVM_CONFIG": str(path)}


def test_readme_fresh_machine_path_lands_on_bwrap(fresh, monkeypatch, tmp_path):
    root, reg, image = fresh["root"], fresh["registry"], fresh["image"]
    text = (REPO_ROOT / "README.md").read_text()
    blocks = FRESH.findall(text)
    assert len(blocks) == 1, blocks
    lines = [ln.split("#")[0].strip() for ln in blocks[0].splitlines()]
    lines = [ln for ln in lines if ln]
    # The block's last command is the server, which this test starts as `Server` does (in the
    # background, with its config); every command before it runs as written.
    assert lines[-1] == "stacyvm serve", lines
    prepare = "\n".join(lines[:-1])
    assert "stacyvm image pull alpine:latest" in prepare, prepare
    images = root / "images"
    # What the machine's config would say: the store and, for this registry, its login.
    images_cfg = {"root": str(images), "registry_auth": {reg.host: f"{USER}:{PASSWORD}"}}

    # Without the login the pull is refused, with a message naming the registry only, and the
    # store keeps nothing.
    no_login = _cli_env({"images": {"root": str(images)}}, tmp_path / "no-login.yaml")
    r = subprocess.run([str(BIN), "image", "pull", image], env={**os.environ, **no_login},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r
    assert f"not authorized to pull from {reg.host}" in r.stderr, r.stderr
    assert str(images) not in r.stderr, r.stderr
    assert not list((images / "blobs" / "sha256").iterdir())

    env = _cli_env({"images": images_cfg}, tmp_path / "cli.yaml")
    run_block("sh", prepare, None, tmp_path, image=image, env_extra=env)
    listed = subprocess.run([str(BIN), "image", "ls", "--json"], env={**os.environ, **env},
                            check=True, capture_output=True, text=True).stdout
    assert [json.loads(ln)["names"] for ln in listed.splitlines()] == [[image]], listed

    # No Docker daemon: a socket nobody listens on, as on a machine without Docker.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    server = Server({
        "providers": {"default": "auto", "mock": {"enabled": False},
                      "bwrap": {"data_dir": str(root / "bwrap")},
                      "microvm": {"data_dir": str(root / "no-microvm-assets")}},
        "images": images_cfg,
        "defaults": {"image": image},
    }, name="fresh").start()
    try:
        log = server.log_path.read_text()
        assert "providers.default is auto: using bwrap" in log, log[-2000:]
        with server.http() as h:
            sb = h.post("/api/v1/sandboxes", json={"image": image}).json()
            assert sb.get("provider") == "bwrap", sb
            assert h.delete(f"/api/v1/sandboxes/{sb['id']}").status_code == 200
        run_tour(server, tmp_path, image=image)
        check_pull_on_spawn(server, reg)
    finally:
        server.stop()


def check_pull_on_spawn(server: Server, reg: Registry) -> None:
    """Spawns of images the store does not have: pulled (once, by concurrent spawns) with the
    configured login; a missing tag and an unreachable registry are clear errors."""
    v2 = f"{reg.host}/library/alpine:v2"
    with server.http() as h:
        def spawn(image: str) -> httpx.Response:
            return h.post("/api/v1/sandboxes", json={"image": image}, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(spawn, [v2] * 3))
        ids = []
        for a in answers:
            assert a.status_code in (200, 201), a.text
            ids.append(a.json()["id"])
        out = h.post(f"/api/v1/sandboxes/{ids[0]}/exec", json={"command": "echo pulled"}).json()
        assert out["stdout"] == "pulled\n", out
        for i in ids:
            assert h.delete(f"/api/v1/sandboxes/{i}").status_code == 200

        missing = spawn(f"{reg.host}/library/alpine:nope")
        assert missing.status_code == 400, missing.text
        body = missing.json()
        assert body["code"] == "BAD_REQUEST", body
        # As a missing image answers on every provider (ProviderError::ImageNotFound).
        assert body["message"].startswith("invalid input: image not found: "), body
        assert "library/alpine:nope" in body["message"], body

        down = spawn("127.0.0.1:1/library/alpine:latest")
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["code"] == "UNAVAILABLE", body
        assert "pulling it failed" in body["message"], body
        for answer in (missing, down):
            assert server.host_tmp not in answer.text and "/var/lib" not in answer.text, answer.text
        live = [s for s in h.get("/api/v1/sandboxes").json() if s["state"] != "destroyed"]
        assert live == [], live
