"""Python 3.14's task introspection on the loop: asyncio.capture_call_graph()
/ print_call_graph() in the process, and ``python -m asyncio ps|pstree PID``
reading another process' tasks from its memory."""
import asyncio
import io
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 14), reason="call graph introspection is 3.14+")


def test_capture_call_graph(loop):
    async def leaf(ready, release):
        ready.set_result(None)
        await release

    async def middle(ready, release):
        await leaf(ready, release)

    async def main():
        ready = loop.create_future()
        release = loop.create_future()
        child = asyncio.create_task(middle(ready, release), name="child")
        await ready
        graph = asyncio.capture_call_graph(child)
        out = io.StringIO()
        asyncio.print_call_graph(child, file=out)
        release.set_result(None)
        await child
        # From inside a task: the current one, awaited by nobody.
        me = asyncio.capture_call_graph()
        assert me.future is asyncio.current_task()
        return graph, out.getvalue(), me

    graph, text, me = loop.run_until_complete(main())
    assert graph.future.get_name() == "child"
    names = [f.frame.f_code.co_name for f in graph.call_stack]
    assert names[:2] == ["leaf", "middle"]
    assert graph.awaited_by == ()  # main() awaited `ready`, not the child
    assert "child" in text and "leaf" in text and "middle" in text
    assert me.awaited_by == ()


def test_call_graph_with_task_group(loop):
    async def sleeper(gate):
        await gate

    async def main():
        gate = loop.create_future()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(sleeper(gate), name=f"s{i}")
                     for i in range(3)]
            await asyncio.sleep(0)
            graphs = [asyncio.capture_call_graph(t) for t in tasks]
            gate.set_result(None)
        return graphs, asyncio.current_task()

    graphs, parent = loop.run_until_complete(main())
    for g in graphs:
        assert [a.future for a in g.awaited_by] == [parent]


PROGRAM = textwrap.dedent("""
    import asyncio, sys
    import evpy

    async def worker(gate):
        await gate

    async def group(name, gate):
        async with asyncio.TaskGroup() as tg:
            for i in range(2):
                tg.create_task(worker(gate), name=f"{name}-worker-{i}")

    async def main():
        gate = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(group("alpha", gate), name="alpha")
            tg.create_task(group("beta", gate), name="beta")
            await asyncio.sleep(0.05)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(
                None, sys.stdin.readline)
            gate.set_result(None)

    if sys.argv[1] == "evpy":
        evpy.run(main())
    else:
        asyncio.run(main())
""")


@pytest.mark.timeout(60)
def test_asyncio_ps_and_pstree_see_tasks(kind, tmp_path):
    # The tools read the task list from the target's memory: that works
    # because evpy runs asyncio's own (C) Task objects, registered with the
    # interpreter like on the default loop, and sets the running loop
    # through asyncio.
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    env = dict(os.environ)
    # The child imports the evpy this test process uses.
    import evpy
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(evpy.__file__))
    prog = subprocess.Popen([sys.executable, str(script), kind],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert prog.stdout.readline() == "ready\n"
        outs = {}
        for cmd in ("ps", "pstree"):
            res = subprocess.run(
                [sys.executable, "-m", "asyncio", cmd, str(prog.pid)],
                capture_output=True, text=True, timeout=30)
            if res.returncode and "ermission" in res.stderr:
                pytest.skip("no permission to read another process: "
                            + res.stderr.strip()[-200:])
            assert res.returncode == 0, res.stderr
            outs[cmd] = res.stdout
    finally:
        prog.stdin.write("\n")
        prog.stdin.close()
        prog.wait(timeout=30)
        prog.stdout.close()
    assert prog.returncode == 0
    for cmd, out in outs.items():
        for name in ("alpha", "beta", "alpha-worker-0", "beta-worker-1"):
            assert name in out, (cmd, out)
    # pstree draws who awaits whom: the workers under their group.
    tree = outs["pstree"]
    assert tree.index("alpha") < tree.index("alpha-worker-0")
