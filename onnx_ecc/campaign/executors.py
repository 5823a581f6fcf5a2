"""Where campaign work runs: in this process, in local worker processes, or as Ray tasks on a cluster.

Why: a campaign's trials are independent and each draws its faults from its own seed, so every
executor gives the same counts; an executor only decides where the workers live and how calls
reach them. A worker is built once per process from a spec ``(class, args)`` (on Ray the spec
travels once through the object store, not with every task) and answers calls
``(method name, args)``; results reach the driver in completion or submission order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import socket
from typing import Any, Callable, Iterable, Iterator

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3          # a Ray task whose worker dies is run again this many times
RAY_INSTALL = "pip install onnx-ecc[ray]"


class ExecutorError(ValueError):
    """Bad executor choice or an unreachable cluster (the message says what)."""


# ---- worker side ---------------------------------------------------------------------------------

_WORKER: tuple[str, Any] | None = None    # this process's worker, with the key of the spec it came from


def _worker(key: str, spec_of: Callable[[], tuple]) -> Any:
    """This process's worker for ``key``, built once from ``spec_of()`` (only the latest is kept)."""
    global _WORKER
    if _WORKER is None or _WORKER[0] != key:
        _WORKER = None                       # free the previous worker's models first
        cls, args = spec_of()
        _WORKER = (key, cls(*args))
    return _WORKER[1]


class _Done:
    """The handle of a call run in this process (it finished when it was submitted)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def _call(worker: Any, call: tuple[str, tuple]) -> Any:
    method, args = call
    return getattr(worker, method)(*args)


def _pool_init(spec: tuple) -> None:
    _worker("pool", lambda: spec)


def _pool_call(call: tuple[str, tuple]) -> Any:
    return _call(_WORKER[1], call)


def _ray_call(box: list, call: tuple[str, tuple]) -> Any:
    """A Ray task: ``box`` holds the spec's object reference (boxed, so Ray does not fetch it for every task)."""
    import ray

    ref = box[0]
    return _call(_worker(ref.hex(), lambda: ray.get(ref)), call)


# ---- driver side ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Executor:
    """Runs calls on workers: ``submit`` starts one and gives a handle, ``wait_any`` the finished
    handles among some, ``result`` and ``cancel`` act on one; ``info`` says where (for the results)."""

    info: dict
    window: int
    submit: Callable[[tuple], Any]
    wait_any: Callable[[list], Iterable]
    result: Callable[[Any], Any]
    cancel: Callable[[Any], None] = lambda handle: None

    def imap(self, calls: Iterable[tuple[str, tuple]], ordered: bool = False) -> Iterator[Any]:
        """Results of ``calls`` with at most ``window`` in flight, in completion order (or in
        submission order); whatever is still in flight when the consumer stops is cancelled."""
        calls = iter(calls)
        pending: dict[Any, int] = {}
        done: dict[int, Any] = {}
        submitted = emitted = 0
        try:
            while True:
                while len(pending) < self.window and (c := next(calls, None)) is not None:
                    pending[self.submit(c)] = submitted
                    submitted += 1
                if not pending:
                    return
                for h in self.wait_any(list(pending)):
                    done[pending.pop(h)] = self.result(h)
                while done:
                    i = emitted if ordered else next(iter(done))
                    if i not in done:
                        break
                    emitted += 1
                    yield done.pop(i)
        finally:
            for h in pending:
                self.cancel(h)


def check_executor(kind: str, address: str | None = None) -> None:
    """Fail early, in one line, on an unknown executor, ``--address`` without Ray, or Ray missing."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"unknown executor {kind!r}; choose from {', '.join(EXECUTORS)}")
    if kind == "local" and address:
        raise ExecutorError("--address names a Ray cluster: use it with --executor ray")
    if kind == "ray":
        _ray_module()


def _ray_module():
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"--executor ray needs Ray: {RAY_INSTALL}") from None
    return ray


@contextlib.contextmanager
def open_executor(kind: str, spec: tuple, jobs: int | None = None, address: str | None = None,
                  tasks: int | None = None) -> Iterator[Executor]:
    """An Executor whose workers are ``spec[0](*spec[1])``: 'local' in this process (one job) or in
    ``jobs`` spawned processes (default: all cores, at most ``tasks``); 'ray' as Ray tasks on the
    cluster at ``address`` (or RAY_ADDRESS), else on a local Ray instance of ``jobs`` CPUs."""
    check_executor(kind, address)
    if kind == "ray":
        with _ray_executor(spec, jobs, address) as ex:
            yield ex
        return
    jobs = max(1, min(jobs or os.cpu_count() or 1, tasks if tasks is not None else 1 << 30))
    if jobs == 1 or (tasks is not None and tasks <= 1):
        worker = spec[0](*spec[1])
        yield Executor(_local_info(1), 1, submit=lambda c: _Done(_call(worker, c)),
                       wait_any=lambda hs: hs, result=lambda h: h.value)
        return
    # spawn (not fork: onnxruntime's threads do not survive a fork); a worker that dies raises
    # BrokenProcessPool instead of hanging the campaign
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_pool_init,
                             initargs=(spec,)) as pool:
        yield Executor(_local_info(jobs), 4 * jobs, submit=lambda c: pool.submit(_pool_call, c),
                       wait_any=lambda hs: wait(hs, return_when=FIRST_COMPLETED)[0],
                       result=lambda f: f.result(), cancel=lambda f: f.cancel())


def _local_info(workers: int) -> dict:
    return {"executor": "local", "nodes": 1, "cpus": os.cpu_count() or 1, "workers": workers}


@contextlib.contextmanager
def _ray_executor(spec: tuple, jobs: int | None, address: str | None) -> Iterator[Executor]:
    """Ray tasks (retried when their worker dies) with the spec put once in the object store."""
    ray = _ray_module()
    started = _ray_connect(ray, address, jobs)
    try:
        box = [ray.put(spec)]
        task = ray.remote(max_retries=RAY_RETRIES)(_ray_call)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        info = {"executor": "ray", "nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "cpus": cpus,
                "workers": cpus}
        yield Executor(info, 2 * cpus, submit=lambda c: task.remote(box, c),
                       wait_any=lambda refs: ray.wait(refs, num_returns=1)[0], result=ray.get,
                       cancel=lambda ref: ray.cancel(ref))
    finally:
        if started:
            ray.shutdown()


def _ray_connect(ray, address: str | None, jobs: int | None) -> bool:
    """Connect to the cluster at ``address`` / RAY_ADDRESS, or start a local instance (of ``jobs``
    CPUs); an instance this process already runs is used as it is. True when this call started it."""
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target and jobs:
        raise ExecutorError("--jobs sizes a local Ray instance; a Ray cluster (--address or RAY_ADDRESS) "
                            "runs on all its CPUs")
    if target:
        _check_reachable(target)
    try:
        ray.init(address=target or "local", num_cpus=None if target else jobs, include_dashboard=False,
                 logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ExecutorError(f"cannot reach the Ray cluster at {target or 'a new local instance'}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT (or ray://HOST:PORT) nobody listens on (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return                                # 'auto' and other forms: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None
