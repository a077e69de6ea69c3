"""Running a comparison's jobs: each (variant, seed) its own `fedlada run` process, J at a time.

Runs are scheduled method-major (for method: for seed), so concurrent jobs are different seeds,
and the later methods of a seed wait until its first run has prepared (and cached) the seed's
base models, which every method of that seed shares.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from fedlada.compare.planning import ATTEMPTS, DONE, LOG, Job, finished_round
from fedlada.runner import in_use


@dataclass
class Outcome:
    job: Job
    status: str  # reused | done | failed | skipped | busy (another process is running it)
    returncode: int = 0
    seconds: float = 0.0  # this invocation
    message: str = ""


def _attempts(d: Path) -> list[dict]:
    path = d / ATTEMPTS
    return json.loads(path.read_text()) if path.exists() else []


def wall_seconds(d: Path) -> Optional[float]:
    """Wall time of a finished run: the sum over the processes that worked on it (None if unknown)."""
    path = d / DONE
    if path.exists():
        return json.loads(path.read_text())["wall_seconds"]
    attempts = _attempts(d)
    return round(sum(a["seconds"] for a in attempts), 3) if attempts else None


def command(job: Job) -> list[str]:
    base = [sys.executable, "-m", "fedlada.cli", "run"]
    if job.state() == "partial":
        return [*base, "--out", str(job.dir), "--resume", f"--set=rounds={job.cfg.rounds}"]  # rounds: maybe more
    return [*base, str(job.scenario), *(f"--set={s}" for s in job.sets), "--out", str(job.dir)]


def run_job(job: Job, *, ready: Optional[threading.Event] = None, wait_for: Optional[threading.Event] = None,
            stop: Optional[threading.Event] = None, procs: Optional[dict] = None) -> Outcome:
    """Run (or continue) one job in a subprocess, output to DIR/log.txt.

    `wait_for`: block until the seed's first run has its base models; `ready`: set once this run has
    (its round 0 is in metrics.jsonl) or it has ended.
    """
    try:
        if wait_for is not None:
            wait_for.wait()
        if stop is not None and stop.is_set():
            return Outcome(job, "skipped", message="interrupted")
        if in_use(job.dir):  # before any attempt is recorded: the other process's run is not a failure of ours
            return Outcome(job, "busy", message="in use by another run")
        start = time.perf_counter()
        try:
            job.dir.mkdir(parents=True, exist_ok=True)
            cmd = command(job)
            log = open(job.dir / LOG, "a")
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as err:
            return Outcome(job, "failed", 1, 0.0, f"could not start: {err}")
        with log:
            if procs is not None:
                procs[id(job)] = proc
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if ready is not None and not ready.is_set() and (job.dir / "metrics.jsonl").exists():
                        ready.set()
            if procs is not None:
                procs.pop(id(job), None)
        seconds = time.perf_counter() - start
        attempts = _attempts(job.dir) + [{"seconds": round(seconds, 3), "returncode": rc}]
        (job.dir / ATTEMPTS).write_text(json.dumps(attempts, indent=1) + "\n")
        reached = finished_round(job.dir)
        if rc == 0 and reached == job.cfg.rounds:
            total = sum(a["seconds"] for a in attempts)
            (job.dir / DONE).write_text(json.dumps({"wall_seconds": round(total, 3), "rounds": reached, "processes": len(attempts)}) + "\n")
            return Outcome(job, "done", rc, seconds)
        why = f"exit code {rc}" if rc else f"exit code 0 but metrics end at round {reached} of {job.cfg.rounds}"
        return Outcome(job, "failed", rc or 1, seconds, f"{why}; see {job.dir / LOG}")
    finally:
        if ready is not None:
            ready.set()


def run_all(
    jobs: list[Job], n_jobs: int, *, on_outcome: Callable[[Outcome], None] = lambda o: None,
    on_tick: Callable[[list[Job]], None] = lambda running: None,
) -> list[Outcome]:
    """Run the unfinished jobs, `n_jobs` processes at a time; finished ones are reused. Never raises
    for a failing run; on KeyboardInterrupt the running processes are stopped and no new one starts."""
    outcomes = []
    todo = []
    for job in jobs:
        if job.state() == "done":
            o = Outcome(job, "reused")
            outcomes.append(o)
            on_outcome(o)
        else:
            todo.append(job)
    # the first unfinished job of each seed prepares its base models; later ones of that seed wait for it
    leaders: dict[int, threading.Event] = {}
    stop = threading.Event()
    procs: dict[int, subprocess.Popen] = {}
    started: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        for job in todo:
            if job.seed not in leaders:
                leaders[job.seed] = threading.Event()
                fut = pool.submit(run_job, job, ready=leaders[job.seed], stop=stop, procs=procs)
            else:
                fut = pool.submit(run_job, job, wait_for=leaders[job.seed], stop=stop, procs=procs)
            started[fut] = job
        pending = set(started)
        try:
            while pending:
                finished, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: todo.index(started[f])):
                    o = fut.result()
                    outcomes.append(o)
                    on_outcome(o)
                running = [j for j in todo if id(j) in procs]
                on_tick(running)
        except KeyboardInterrupt:
            stop.set()
            for ev in leaders.values():
                ev.set()
            for proc in list(procs.values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return outcomes


def default_threads(n_jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // n_jobs)
