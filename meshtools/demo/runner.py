"""Running the demo: each step of scenario.STEPS is a method that runs the real commands on
the scratch mesh (as subprocesses, in the scratch repository, with the scratch mesh's
environment) and returns what it shows: lines for a person and data for the JSON record.

Every way out (done, a failing step, ^C) ends in `teardown`: the mesh stopped (meshctl
down --all) and the scratch directory removed, unless --keep asked to leave it up.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from ..core import clock, errors, proc
from . import scenario

TIMEOUT = 60.0  # the most any one command or wait of the demo takes
POLL = 0.05
# The caller's mesh is not the demo's: none of these reaches the scratch mesh's commands.
FOREIGN_ENV = ("MESH_HOME", "MESH_SESSION", "MESH_REDIS_URL", "MESH_NAMESPACE", "MESH_ROLE",
               "MESH_TASK", "MESH_TASK_HOPS")


class StepFailed(errors.Unavailable):
    """A step of the demo did not do what it shows (69)."""


def scratch_env(environ=os.environ) -> dict:
    return {k: v for k, v in environ.items() if k not in FOREIGN_ENV}


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


class Demo:
    """One `meshctl demo`. report(record, text) shows a finished step; progress(text) says
    which one runs now (a terminal only)."""

    def __init__(self, keep: bool, report, progress=lambda text: None, screen: bool = False,
                 snapshot: tuple[str, ...] = ("meshctl", "status")):
        self.keep, self.report, self.progress = keep, report, progress
        self.snapshot_argv = list(snapshot)  # the snapshot step's command (the caller's pick)
        self.screen = screen  # show screens as on a terminal (else their JSON records)
        self.tmp: str | None = None  # the scratch directory: the repository, its worktrees
        self.repo: str | None = None
        self.home = None  # the scratch mesh's MeshHome, once its repository exists
        self.env = scratch_env()
        self.booted = False
        self.holders: list[subprocess.Popen] = []  # the deadlock step's stand-in sessions

    # --- the run -----------------------------------------------------------------------

    def steps(self) -> list[scenario.Step]:
        skip = ("down", "cleanup") if self.keep else ()
        return [step for step in scenario.STEPS if step.name not in skip]

    def run(self) -> dict:
        """Every step, then the closing record; on any failure or ^C the teardown first."""
        began = time.monotonic()
        steps = self.steps()
        current = None
        try:
            for n, current in enumerate(steps, 1):
                self.step(current, n, len(steps))
        except BaseException as e:
            self.teardown(current, "interrupted" if isinstance(e, KeyboardInterrupt)
                          else "failed")
            if isinstance(e, errors.MeshError):
                failed = StepFailed(f"step {current.name} ({current.text}) failed: {e}")
                failed.exit_code = e.exit_code
                raise failed from None
            raise
        finally:
            self.stop_holders()
        record = {"ts": clock.iso(), "kind": "demo", "status": "ok",
                  "seconds": round(time.monotonic() - began, 3), "kept": self.keep,
                  "scratch": self.tmp, "repository": self.repo,
                  "home": self.home.path if self.home else None}
        if self.keep:
            record["dash"] = self.dash_hint()
        return record

    def step(self, step: scenario.Step, n: int, of: int) -> None:
        at = time.monotonic()
        self.progress(f"[{n}/{of}] {step.text}")
        lines, data = getattr(self, step.name)()
        seconds = round(time.monotonic() - at, 3)
        record = {"ts": clock.iso(), "kind": "step", "step": step.name, "n": n, "of": of,
                  "status": "done", "seconds": seconds, "text": step.text, "lines": lines,
                  **data}
        self.report(record, "\n".join([f"✔ [{n}/{of}] {step.text}  {seconds:.2f}s",
                                       *(f"    {line}".rstrip() for line in lines)]))

    def teardown(self, step: scenario.Step, why: str) -> None:
        """After a step failed or was interrupted: stop the mesh and remove the scratch
        directory (said in one record), a second ^C notwithstanding."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_holders()
            done, error = [], None
            if self.booted:
                try:
                    self.down()
                    done.append("stopped the demo mesh")
                except errors.MeshError as e:
                    error = f"stopping the demo mesh: {e}"
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
                done.append(f"removed {self.tmp}")
            self.report({"ts": clock.iso(), "kind": "cleanup", "step": step.name, "why": why,
                         "done": done, "error": error},
                        f"✘ {step.text}: {why}; " + (error or f"cleaned up: {', '.join(done)}"))
        finally:
            signal.signal(signal.SIGINT, previous)

    def dash_hint(self) -> str:
        return f"cd {self.repo} && meshctl dash"

    # --- helpers ------------------------------------------------------------------------

    def start(self, name: str, *args: str, **popen) -> subprocess.Popen:
        """A meshtools command of this install, started in the scratch repository with the
        scratch mesh's environment; its output piped unless told otherwise."""
        for stream in ("stdout", "stderr"):
            popen.setdefault(stream, subprocess.PIPE)
        return subprocess.Popen([proc.meshtools_command(name), *args], cwd=self.repo,
                                env=self.env, text=True, stdin=subprocess.DEVNULL, **popen)

    def finish(self, child: subprocess.Popen, what: str, check: bool = True,
               timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        """Wait for a started command (killed if the demo is not going to); a failure (when
        check) is a StepFailed naming it and its last line of complaint."""
        try:
            out, err = child.communicate(timeout=timeout)
        except BaseException as e:
            child.kill()
            child.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise StepFailed(f"{what}: no answer within {timeout:g}s") from None
            raise
        if check and child.returncode != 0:
            raise StepFailed(f"{what} exited {child.returncode}: "
                             f"{last_line(err) or last_line(out)}")
        return subprocess.CompletedProcess(child.args, child.returncode, out, err)

    def command(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.finish(self.start(name, *args), " ".join([name, *args]), check)

    @staticmethod
    def records(output: str) -> list[dict]:
        from ..core import jsonl

        return [jsonl.parse_line(line, n) for n, line in enumerate(output.splitlines(), 1)
                if line.strip()]

    def git(self, *args: str) -> str:
        from ..landing import gitops

        return gitops.out(self.repo, *args)

    def until(self, what: str, probe, timeout: float = TIMEOUT):
        """probe()'s first true answer, polled; StepFailed saying what did not happen."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise StepFailed(f"{what}: not within {timeout:g}s")
            time.sleep(POLL)

    # --- the steps: each returns (lines to show, data for the JSON record) --------------

    def scratch(self):
        from ..core import fs, git
        from ..core.home import MeshHome
        from ..landing import gitops
        from ..mesh.boot import DEFAULT_CONFIG

        self.tmp = tempfile.mkdtemp(prefix="meshtools-demo-")
        self.repo = os.path.join(self.tmp, "demo-app")
        for rel, text in scenario.FILES.items():
            path = os.path.join(self.repo, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        gitops.run(self.repo, "init", "-q", "-b", "main")
        gitops.run(self.repo, "add", ".")
        gitops.run(self.repo, "commit", "-q", "-m", "demo-app: first commit",
                   config=gitops.identity_args(self.repo))
        self.home = MeshHome(os.path.join(git.find_worktree(self.repo).common_dir, "meshtools"))
        self.home.ensure()
        fs.atomic_write(self.home.config_file, scenario.config_toml(DEFAULT_CONFIG))
        return ([f"{self.repo} ({len(scenario.FILES)} files on main)",
                 f"its mesh: {self.home.path}"],
                {"repository": self.repo, "home": self.home.path})

    def init(self):
        self.booted = True  # from here on, whatever started is stopped on the way out
        records = self.records(self.command("meshctl", "init", "--agent", scenario.AGENT,
                                            "--json").stdout)
        sessions = [r for r in records if r.get("kind") == "step" and r.get("session")]
        lines = [f"{r['session']:<12} {r['status']} (pid {r.get('pid')})" for r in sessions]
        return lines, {"sessions": [r["session"] for r in sessions]}

    def spawn(self):
        [record] = self.records(self.command("mesh-spawn", "builder", "--queue", "--detach",
                                             "--agent", scenario.AGENT, "--json").stdout)
        return ([f"{record.get('session') or record.get('id')} (builder) pid {record['pid']}"],
                {"session": record.get("session") or record.get("id")})

    def execute(self):
        started = [(task, self.start("meshctl", "execute", "--id", task.id, "--json",
                                     task.prompt)) for task in scenario.TASKS]  # at once
        lines, routes = [], {}
        for task, child in started:
            done = self.finish(child, f"meshctl execute {task.prompt!r}")
            [record] = [r for r in self.records(done.stdout) if r.get("kind") == "route"]
            routes[task.id] = record["role"]
            lines.append(f"meshctl execute {task.prompt!r:<46} -> {record['role']}")
        return lines, {"routes": routes}

    def results(self):
        lines, results = [], {}
        for task in scenario.TASKS:
            [record] = self.records(self.command("queue-results", "--wait", task.id,
                                                 "--timeout", str(TIMEOUT), "--json").stdout)
            results[task.id] = {k: record.get(k) for k in ("status", "worker", "exit_code")}
            lines.append(f"{task.id:<14} {record['status']} by {record.get('worker')}: "
                         f"{last_line(record.get('output'))}")
            if record["status"] != "ok":
                raise StepFailed(f"task {task.id} {record['status']}: "
                                 f"{last_line(record.get('output'))}")
        return lines, {"results": results}

    def landed(self):
        builder = next(t for t in scenario.TASKS if t.role == "builder")
        subject = scenario.commit_subject(builder.role, builder.prompt)
        sha = self.until("the builder's commit on main", lambda: self.git(
            "log", "main", "--format=%H", "--fixed-strings", f"--grep={subject}", "-1"))
        shown = self.git("log", "-1", "--format=%h %s%n%b", sha).strip().splitlines()
        return ([line for line in shown if line.strip()],
                {"commit": sha, "subject": subject})

    def deadlock(self):
        """Two stand-in sessions (a process each that owns its locks) hold one scope each;
        the first waits for the second's; the second's wait for the first's closes a cycle."""
        from ..locks.service import LockService

        (a, path_a), (b, path_b) = scenario.DEADLOCK
        self.holders = [subprocess.Popen(["sleep", str(int(TIMEOUT))]) for _ in range(2)]
        pid_a, pid_b = (str(p.pid) for p in self.holders)
        self.command("file-lock", "acquire", "--as", a, "--pid", pid_a, path_a, "--json")
        self.command("file-lock", "acquire", "--as", b, "--pid", pid_b, path_b, "--json")
        self.holders.append(self.start("file-lock", "acquire", "--as", a, "--pid", pid_a, path_b,
                                       "--json", stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL))
        self.until(f"{a} waiting", lambda: LockService(self.home).snapshot()["waits"])
        closer = self.command("file-lock", "acquire", "--as", b, "--pid", pid_b, path_a,
                              "--json", check=False)
        if closer.returncode != errors.TEMPFAIL:
            raise StepFailed(f"file-lock acquire exited {closer.returncode}, not "
                             f"{errors.TEMPFAIL}: {last_line(closer.stderr)}")
        self.stop_holders()
        for who in (a, b):
            self.command("file-lock", "release", "--as", who, "--all", "--json")
        return ([f"{a} holds {path_a}, {b} holds {path_b}; {a} waits for {path_b}",
                 f"{b} asks for {path_a}: exit {closer.returncode}: "
                 f"{last_line(closer.stderr)}"],
                {"exit_code": closer.returncode, "message": last_line(closer.stderr)})

    def killed(self):
        from ..agents import supervisor
        from ..coord import registry

        task = scenario.SLOW_TASK
        self.command("meshctl", "execute", "--id", task.id, "--json", task.prompt)
        running = self.until(f"a builder running {task.id}", lambda: next(
            (s for s in registry.all_sessions(self.home) if s.get("task") == task.id), None))
        session = running["id"]
        worker = (supervisor.read_state(self.home, session) or {}).get("child_pid")
        if not worker:
            raise StepFailed(f"no worker pid in the supervisor state of {session}")
        os.kill(worker, signal.SIGKILL)
        [record] = self.records(self.command("queue-results", "--wait", task.id, "--timeout",
                                             str(TIMEOUT), "--json").stdout)
        if record["status"] != "ok" or record.get("worker") == session:
            raise StepFailed(f"task {task.id}: {record['status']} by {record.get('worker')} "
                             f"(killed: {session})")
        return ([f"{task.id} ran on {session}: kill -9 {worker} (its queue worker)",
                 f"{task.id} {record['status']} by {record['worker']} "
                 f"(attempt {record.get('attempt')}): {last_line(record.get('output'))}"],
                {"killed": session, "pid": worker, "finished_by": record["worker"]})

    def shown(self, argv: list[str]) -> tuple[list[str], dict]:
        """A command's output as the step shows it: its screen on a terminal, else its
        records."""
        if self.screen:
            return [f"$ {' '.join(argv)}", *self.on_terminal(argv)], {"command": " ".join(argv)}
        return [], {"command": " ".join(argv),
                    "records": self.records(self.command(*argv, "--json").stdout)}

    def snapshot(self):
        return self.shown(self.snapshot_argv)

    def on_terminal(self, argv: list[str]) -> list[str]:
        """argv's screen: run on a pseudo-terminal of its own, as a person would see it."""
        import pty

        master, slave = pty.openpty()
        try:
            child = self.start(*argv, stdout=slave)
        finally:
            os.close(slave)
        chunks = []
        try:
            while chunk := os.read(master, 65536):
                chunks.append(chunk)
        except OSError:  # EIO: the child closed its end
            pass
        finally:
            os.close(master)
        self.finish(child, " ".join(argv))
        return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n").rstrip("\n") \
            .splitlines()

    def down(self):
        shown = self.shown(["meshctl", "down", "--all"])
        self.booted = False
        return shown

    def cleanup(self):
        shutil.rmtree(self.tmp)
        removed, self.tmp = self.tmp, None
        return [f"removed {removed}"], {"removed": removed}

    def stop_holders(self) -> None:
        for holder in self.holders:
            holder.kill()
            holder.wait()
        self.holders = []
