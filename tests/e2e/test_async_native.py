"""The async SDK used the way applications use it: `async with`, `async for`, gather."""

from __future__ import annotations

import asyncio
import re

import pytest
import pytest_asyncio
import stacyvm
from conftest import SANDBOX_ID_RE


@pytest_asyncio.fixture
async def aclient(server):
    async with stacyvm.AsyncClient(server.base_url, api_key=server.api_key) as client:
        yield client


@pytest.mark.asyncio
async def test_async_context_managers(aclient):
    async with await aclient.spawn() as sb:
        assert re.match(SANDBOX_ID_RE, sb.id)
        res = await sb.exec("echo async")
        assert (res.exit_code, res.stdout) == (0, "async\n")
        sid = sb.id
    with pytest.raises(stacyvm.SandboxNotFound):
        await aclient.get(sid)


@pytest.mark.asyncio
async def test_async_stream(aclient):
    async with await aclient.spawn() as sb:
        chunks = []
        async for chunk in sb.exec_stream("for i in 1 2 3; do echo $i; done; echo e >&2; exit 5"):
            chunks.append(chunk)
        assert chunks[-1].stream == "exit" and chunks[-1].data == ""
        assert "".join(c.data for c in chunks if c.stream == "stdout") == "1\n2\n3\n"
        assert "".join(c.data for c in chunks if c.stream == "stderr") == "e\n"


@pytest.mark.asyncio
async def test_async_concurrent_spawns_and_execs(aclient):
    sbs = await asyncio.gather(*(aclient.spawn() for _ in range(6)))
    try:
        assert len({s.id for s in sbs}) == 6
        results = await asyncio.gather(*(s.exec(f"echo {i}") for i, s in enumerate(sbs)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
        listed = {i.id for i in await aclient.list()}
        assert {s.id for s in sbs} <= listed
    finally:
        await asyncio.gather(*(s.destroy() for s in sbs))


@pytest.mark.asyncio
async def test_async_files(aclient):
    async with await aclient.spawn() as sb:
        await sb.write_file("/workspace/a.txt", "ä")
        assert await sb.read_file("/workspace/a.txt") == "ä"
        assert (await sb.stat_file("/workspace/a.txt"))["size"] == 2
        await sb.move_file("/workspace/a.txt", "/workspace/b.txt")
        assert await sb.glob_files("/workspace/*.txt") == ["/workspace/b.txt"]
        await sb.delete_file("/workspace/b.txt")
        assert await sb.glob_files("/workspace/*.txt") == []


@pytest.mark.asyncio
async def test_async_errors(aclient):
    with pytest.raises(stacyvm.SandboxNotFound):
        await aclient.get("sb-nonexistent")
    async with await aclient.spawn() as sb:
        with pytest.raises(stacyvm.StacyVMError) as ei:
            await sb.exec("sleep 5", timeout="500ms")
        assert ei.value.code == "TIMEOUT"
