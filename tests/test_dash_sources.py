"""The dash's data sources and its collector, each against the real thing: process trees,
git repositories, sockets, an http.server, the embedded Redis, NVML (absent here)."""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from meshtools.core import config, proc
from meshtools.core.errors import ConfigError
from meshtools.core.home import MeshHome
from meshtools.dash import collector, snapshot, spark
from meshtools.dash.sources import gitstate, gpu, offload, procs, services

from .helpers import commit, git, wait_until


def settings_from(mesh_home, text: str) -> config.Section:
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text(text)
    return config.of(MeshHome(str(mesh_home)))


# -- procs ---------------------------------------------------------------------------------

TREE = """
import subprocess, sys, time
busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
idle = subprocess.Popen(["sleep", "600"])
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def tree():
    """A real tree: an idle parent, a child spinning on a core, an idle child."""
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE,
                              start_new_session=True)
    assert parent.stdout.readline() == b"ready\n"
    yield parent
    os.killpg(parent.pid, 9)
    parent.wait()


def peer(pid, **extra):
    return {"id": "builder-1", "pid": pid, "pid_start": proc.start_time(pid),
            "host": proc.hostname(), **extra}


def test_procs_sums_cpu_and_memory_over_the_whole_tree(tree):
    sampler = procs.Sampler()
    first = sampler([peer(tree.pid)])["builder-1"]
    assert first["cpu"] is None  # one sample tells no delta
    assert first["procs"] == 3 and first["rss"] > 0
    parent_rss = proc_rss(tree.pid)
    assert first["rss"] > parent_rss  # the children's memory is in
    seen = []
    # the parent sleeps: only its spinning child can make the tree busy
    wait_until(lambda: seen.append(sampler([peer(tree.pid)])["builder-1"]["cpu"])
               or seen[-1] > 20, timeout=30)


def proc_rss(pid):
    import psutil

    return psutil.Process(pid).memory_info().rss


def test_procs_never_counts_a_recycled_or_dead_pid(tree):
    dead = subprocess.Popen(["true"])
    dead.wait()
    recycled = dict(peer(tree.pid), id="old-1", pid_start=proc.start_time(tree.pid) - 1)
    elsewhere = dict(peer(tree.pid), id="far-1", host="another-host")
    found = procs.Sampler()([recycled, elsewhere, peer(dead.pid, id="gone-1", pid_start=1),
                             peer(tree.pid)])
    assert list(found) == ["builder-1"]


def test_procs_cpu_deltas():
    assert procs.cpu_percent(1.0, 2.0) == 50.0 and procs.cpu_percent(3.0, 1.5) == 200.0
    assert procs.cpu_percent(1.0, 0.0) == 0.0
    assert procs.delta(1.0, 3.5, created=10.0, since=100.0) == 2.5
    assert procs.delta(None, 3.0, created=105.0, since=100.0) == 3.0  # born in between
    assert procs.delta(None, 3.0, created=95.0, since=100.0) is None  # seen late: unknown
    assert procs.delta(None, 3.0, created=95.0, since=None) is None  # the first sample


def test_procs_trees_come_from_one_parent_map():
    by_parent = {1: [10, 11], 10: [100], 100: [1000], 7: [70]}
    assert procs.descendants(1, by_parent) == [10, 11, 100, 1000]
    assert procs.descendants(1000, by_parent) == []
    import psutil

    mine = procs.parents(psutil)
    assert os.getpid() in mine[os.getppid()]


# -- gitstate ------------------------------------------------------------------------------

def branch(repo, name, *commits, start="main"):
    """mesh/<name> from start with commits [(path, text)], back on main; their shas."""
    git(repo, "checkout", "-q", "-b", f"mesh/{name}", start)
    shas = [commit(repo, path, text, f"{name} {path}") for path, text in commits]
    git(repo, "checkout", "-q", "main")
    return shas


def pick(repo, sha):
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "cherry-pick", "-x", sha)


def test_gitstate_counts_unpicked_work_and_forecasts_its_landing(repo, mesh_home):
    # clean: its first commit (README) was picked and main changed README again since;
    # only the second (a new file) is unpicked, and it applies cleanly. A merge of the whole
    # branch would conflict on README: the forecast replays the unpicked work only.
    first, _ = branch(repo, "clean", ("README.md", "hello builder\n"), ("new.txt", "n\n"))
    pick(repo, first)
    commit(repo, "README.md", "hello main\n", "main rewrites README")
    conflict = branch(repo, "tester", ("docs/guide.md", "# tester\n"),
                      ("web/src/app.js", "tester\n"))
    commit(repo, "web/src/app.js", "main\n", "main changes app.js")
    # chain: its second commit edits the file its first adds: replayed in order, onto the
    # tree the first made, both apply
    branch(repo, "chain", ("chain.txt", "1\n"), ("chain.txt", "2\n"))
    (done,) = branch(repo, "done", ("docs/other.md", "x\n"))
    pick(repo, done)
    git(repo, "worktree", "add", "-q", str(repo.parent / "wt-tester"), "mesh/tester")
    before = {cwd: (git(cwd, "status", "--porcelain"), git(cwd, "rev-parse", "HEAD"))
              for cwd in (repo, repo.parent / "wt-tester")}
    refs = git(repo, "for-each-ref")

    found = gitstate.roles_state(MeshHome(str(mesh_home)), str(repo))

    assert found["clean"] == {"branch": "mesh/clean", "worktree": None, "unpicked": 1,
                              "forecast": "clean", "paths": [], "error": None}
    assert found["tester"] == {"branch": "mesh/tester",
                               "worktree": str(repo.parent / "wt-tester"), "unpicked": 2,
                               "forecast": "conflict", "commit": conflict[1],
                               "paths": ["web/src/app.js"], "error": None}
    assert (found["chain"]["unpicked"], found["chain"]["forecast"]) == (2, "clean")
    assert found["done"]["unpicked"] == 0 and found["done"]["forecast"] == "clean"
    assert sorted(found) == ["chain", "clean", "done", "tester"]
    # nothing was touched: no checkout, no ref
    assert {cwd: (git(cwd, "status", "--porcelain"), git(cwd, "rev-parse", "HEAD"))
            for cwd in before} == before
    assert git(repo, "for-each-ref") == refs
    objects = git(repo, "count-objects")
    assert gitstate.roles_state(MeshHome(str(mesh_home)), str(repo)) == found  # again,
    assert git(repo, "count-objects") == objects  # writing no new objects


def test_gitstate_remembers_a_verdict_until_main_or_the_branch_moves(repo, mesh_home):
    home, known = MeshHome(str(mesh_home)), {}
    branch(repo, "w", ("new.txt", "n\n"))
    assert gitstate.roles_state(home, str(repo), known)["w"]["unpicked"] == 1
    assert len(known) == 1
    assert gitstate.roles_state(home, str(repo), known)["w"]["unpicked"] == 1
    git(repo, "checkout", "-q", "mesh/w")
    commit(repo, "new.txt", "changed\n", "w changes new.txt")
    git(repo, "checkout", "-q", "main")
    assert gitstate.roles_state(home, str(repo), known)["w"]["unpicked"] == 2  # it moved
    commit(repo, "new.txt", "main\n", "main adds new.txt too")
    assert gitstate.roles_state(home, str(repo), known)["w"]["forecast"] == "conflict"
    assert len(known) == 1  # the verdicts no branch has any more are forgotten


def test_gitstate_without_a_new_enough_git_says_unknown(repo):
    branch(repo, "old", ("new.txt", "n\n"))
    record = gitstate.branch_state(str(repo), "main", "mesh/old", set(), forecast=False)
    assert record == {"unpicked": 1, "forecast": "unknown", "paths": [],
                      "error": "git older than 2.38"}


def test_gitstate_version_and_merge_tree_parsing():
    assert gitstate.parse_version("git version 2.39.5\n") == (2, 39, 5)
    assert gitstate.parse_version("git version 2.45.1.windows.1") == (2, 45, 1)
    assert gitstate.parse_version("nonsense") is None
    assert [gitstate.can_forecast(v) for v in ((2, 37, 9), (2, 38), (3, 0), None)] == \
        [False, True, True, False]
    assert gitstate.parse_merge_tree("abc123\0a b\0c\0a b\0") == ("abc123", ["a b", "c"])
    assert gitstate.parse_merge_tree("abc123\n") == ("abc123", [])


# -- gpu and sparklines --------------------------------------------------------------------

def test_gpu_sample_is_a_list_of_gpus_or_says_no_gpu_and_why():
    sample = gpu.read_nvml()  # this machine: no NVML library, so "no GPU (...)"
    if sample["absent"] is None:
        assert sample["gpus"] and all(set(g) == {"index", "name", "util", "mem_used",
                                                 "mem_total"} for g in sample["gpus"])
    else:
        assert sample["gpus"] == [] and sample["absent"].startswith("no GPU (")
        assert sample["absent"] != "no GPU ()"
    assert gpu.Gpus()()["absent"] == sample["absent"]


def test_gpu_history_keeps_the_last_samples_per_gpu_with_gaps():
    history = gpu.History(size=3)

    def sample(*utils):
        return {"absent": None, "gpus": [{"index": i, "name": "H200", "util": u,
                                          "mem_used": 25 * (i + 1), "mem_total": 100}
                                         for i, u in utils]}

    history.add(sample((0, 10), (1, 90)))
    history.add(sample((0, 20)))  # GPU 1 missed a sample
    history.add(sample((0, 30), (1, 70)))
    out = history.add(sample((0, 40), (1, 60)))
    assert [g["util_history"] for g in out["gpus"]] == [[20, 30, 40], [None, 70, 60]]
    assert [g["mem_history"] for g in out["gpus"]] == [[25.0] * 3, [None, 50.0, 50.0]]


def test_sparkline():
    assert spark.sparkline([0, 50, 100], 3, top=100) == "▁▅█"
    assert spark.sparkline([1, 2, 3, 4, 5, 6, 7, 8], 4) == "▅▆▇█"  # the last width, scaled
    assert spark.sparkline([100, None, 100], 5, top=100) == "  █ █"  # padded, with a gap
    assert spark.sparkline([0, 0], 2) == "▁▁" and spark.sparkline([], 3) == "   "
    assert spark.sparkline([200, -5], 2, top=100) == "█▁" and spark.sparkline([1], 0) == ""


# -- services ------------------------------------------------------------------------------

SERVICES = """\
[dash]

[[dash.service]]
name = "web"
kind = "http"
target = "http://127.0.0.1:1/"

[[dash.service]]
name = "memcache"
kind = "tcp"
target = "localhost:11211"
timeout = 0.5
"""


def test_services_are_read_from_config(mesh_home):
    found = services.services_of(settings_from(mesh_home, SERVICES))
    assert found == [
        {"name": "web", "kind": "http", "target": "http://127.0.0.1:1/", "timeout": 2.0},
        {"name": "memcache", "kind": "tcp", "target": "localhost:11211", "timeout": 0.5}]
    assert services.services_of(settings_from(mesh_home, "")) == []


@pytest.mark.parametrize("change, line, message", [
    (('kind = "tcp"', 'kind = "udp"'), 10,
     "[[dash.service]] #2 kind: expected one of tcp, http, unix, pidfile, command, got 'udp'"),
    (('timeout = 0.5', 'timeout = "soon"'), 12,
     "[[dash.service]] #2 timeout: expected a number, got 'soon'"),
    (('timeout = 0.5', 'timeout = 0'), 12,
     "[[dash.service]] #2 timeout: expected seconds, more than 0, got 0.0"),
    (('target = "localhost:11211"', 'target = "localhost"'), 11,
     "[[dash.service]] #2 target: expected host:port, got 'localhost'"),
    (('target = "http://127.0.0.1:1/"\n', ''), 3, "[[dash.service]] #1 target: missing"),
    ((SERVICES, '[dash]\nservice = "web"\n'), 2,
     "[dash] service: expected a list of tables, got 'web'"),
])
def test_a_bad_service_table_is_a_config_error_naming_file_line_and_key(
        mesh_home, change, line, message):
    settings = settings_from(mesh_home, SERVICES.replace(*change))
    with pytest.raises(ConfigError) as caught:
        services.services_of(settings)
    assert caught.value.exit_code == 78
    assert str(caught.value).startswith(f"{mesh_home}/config.toml:{line}: {message}")


def test_an_unknown_key_in_a_service_table_is_warned_about_at_its_line(mesh_home, run):
    settings_from(mesh_home, SERVICES.replace('timeout = 0.5', 'timout = 0.5'))
    result = run("queue-drain", "--agent", "shell", "--burst", check=0)
    assert result.stderr.splitlines() == [
        f"queue-drain: warning: {mesh_home}/config.toml:12: [dash.service] timout: "
        "unknown key, ignored (known: kind, name, target, timeout)"]


def check(kind, target, timeout=2.0):
    return services.check({"name": "s", "kind": kind, "target": target, "timeout": timeout})


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tcp_and_unix_checks(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = check("tcp", f"127.0.0.1:{listener.getsockname()[1]}")
    assert up["ok"] and up["detail"] == "connected" and up["latency_ms"] >= 0
    down = check("tcp", f"127.0.0.1:{closed_port()}")
    assert (down["ok"], down["detail"]) == (False, "Connection refused")
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        assert check("unix", path)["ok"]
    assert (check("unix", path)["ok"], check("unix", path)["detail"]) == \
        (False, "Connection refused")  # the socket file outlived its listener
    assert check("unix", str(tmp_path / "none"))["detail"] == "No such file or directory"


class Endpoint(http.server.BaseHTTPRequestHandler):
    """Answers like ollama (/api/tags), an OpenAI-compatible server (/v1/models), a
    failing service (/broken: 503) and a healthy one (anything else)."""

    def do_GET(self):
        bodies = {"/api/tags": {"models": [{"name": "qwen3:8b"}, {"name": "llama3:8b"}]},
                  "/v1/models": {"object": "list", "data": [{"id": "m"}]}}
        status = 503 if self.path == "/broken" else 200
        body = json.dumps(bodies.get(self.path, {})).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_check(endpoint):
    assert (check("http", endpoint + "/")["ok"], check("http", endpoint + "/")["detail"]) == \
        (True, "HTTP 200")
    broken = check("http", endpoint + "/broken")
    assert (broken["ok"], broken["detail"]) == (False, "HTTP 503")
    assert check("http", f"http://127.0.0.1:{closed_port()}/")["detail"] == "Connection refused"


def test_pidfile_check(tmp_path):
    pidfile = tmp_path / "d.pid"
    assert check("pidfile", str(pidfile))["detail"] == f"no pid file {pidfile}"
    pidfile.write_text(f"{os.getpid()}\n")
    assert check("pidfile", str(pidfile))["ok"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    assert (check("pidfile", str(pidfile))["ok"], check("pidfile", str(pidfile))["detail"]) \
        == (False, f"pid {dead.pid} is not running")


def test_command_check_and_its_timeout_kills_all_it_started(tmp_path):
    up = check("command", "true")
    assert up == {"name": "s", "kind": "command", "ok": True, "latency_ms": up["latency_ms"],
                  "detail": "exit 0"}
    failed = check("command", "echo not ready; exit 3")
    assert (failed["ok"], failed["detail"]) == (False, "exit 3: not ready")
    leaky = check("command", "echo api_key=sk-abcdefghijklmnopqrstuv; exit 1")
    assert "sk-abc" not in leaky["detail"] and "[redacted]" in leaky["detail"]
    pid_file = tmp_path / "child.pid"
    hung = check("command", f"sleep 600 & echo $! > {pid_file}; wait", timeout=0.5)
    assert (hung["ok"], hung["detail"]) == (False, "timed out")
    wait_until(lambda: not proc.is_alive(int(pid_file.read_text())))


# -- offload -------------------------------------------------------------------------------

def endpoint_record(kind, url):
    return {"name": kind, "kind": kind, "url": url, "timeout": 2.0}


def test_offload_probes_ollama_openai_and_a_closed_port(endpoint):
    ollama = offload.probe(endpoint_record("ollama", endpoint))
    assert (ollama["ok"], ollama["models"], ollama["detail"]) == (True, 2, "HTTP 200")
    openai = offload.probe(endpoint_record("openai", endpoint + "/"))
    assert (openai["ok"], openai["models"]) == (True, 1)
    plain = offload.probe(endpoint_record("http", endpoint + "/broken"))
    assert (plain["ok"], plain["models"], plain["detail"]) == (False, None, "HTTP 503")
    closed = offload.probe(endpoint_record("ollama", f"http://127.0.0.1:{closed_port()}"))
    assert (closed["ok"], closed["models"], closed["detail"]) == \
        (False, None, "Connection refused")


def test_offload_config(mesh_home):
    text = ('[[dash.offload]]\nname = "ollama"\nkind = "ollama"\n'
            'url = "http://localhost:11434"\n\n[[dash.offload]]\nname = "x"\nurl = "{}"\n')
    found = offload.endpoints_of(settings_from(mesh_home, text.format("https://h/api")))
    assert found[1] == {"name": "x", "kind": "http", "url": "https://h/api", "timeout": 3.0}
    with pytest.raises(ConfigError, match=r"config.toml:8: \[\[dash.offload\]\] #2 url: "):
        offload.endpoints_of(settings_from(mesh_home, text.format("localhost:1")))


def test_offload_model_count():
    assert offload.model_count("ollama", b'{"models": [1, 2, 3]}') == 3
    assert offload.model_count("openai", b'{"data": []}') == 0
    assert offload.model_count("ollama", b"<html>") is None
    assert offload.model_count("ollama", b"[]") is None
    assert offload.model_count("http", b'{"models": [1]}') is None


# -- the collector -------------------------------------------------------------------------

def test_a_hung_source_never_delays_the_snapshot_and_shows_its_age_and_timeout():
    release, calls = threading.Event(), []

    def hangs():
        calls.append(1)
        if len(calls) > 1:
            release.wait()  # the second read hangs until the test ends
        return "first"

    def leaks():
        raise ConfigError("bad ghp_abcdefghijklmnopqrstuvwxyz\nsecond line")

    ticks = iter(range(10**9))
    with collector.Collector([collector.Source("slow", hangs, every=0.01, timeout=0.3),
                              collector.Source("fast", lambda: next(ticks), 0.01, 1.0),
                              collector.Source("broken", lambda: 1 / 0, 0.01, 1.0),
                              collector.Source("leaks", leaks, 0.01, 1.0)]) as c:
        wait_until(lambda: len(calls) > 1)  # hung now
        # each snapshot returns while the slow source hangs
        wait_until(lambda: c.snapshot()["slow"]["error"] is not None)
        slow = c.snapshot()["slow"]
        assert slow["data"] == "first" and slow["error"].startswith("no answer for ")
        assert slow["error"].endswith("(timeout 0.3s)")
        ages = [slow["age"]]
        wait_until(lambda: ages.append(c.snapshot()["slow"]["age"]) or ages[-1] > ages[0])
        fast = [c.snapshot()["fast"]["data"]]
        wait_until(lambda: fast.append(c.snapshot()["fast"]["data"]) or fast[-1] > fast[0])
        assert c.snapshot()["fast"]["error"] is None
        assert c.snapshot()["broken"] == {"data": None, "age": None,
                                          "error": "ZeroDivisionError: division by zero"}
        assert c.snapshot()["leaks"]["error"] == "bad [redacted]"  # one line, masked
        release.set()
        wait_until(lambda: c.snapshot()["slow"]["error"] is None)


def test_collector_record_is_pure():
    state = {"data": [1], "at": 10.0, "error": None, "since": None}
    assert collector.record(state, 12.5, 5.0) == {"data": [1], "age": 2.5, "error": None}
    hung = dict(state, since=11.0)
    assert collector.record(hung, 15.0, 5.0)["error"] is None
    assert collector.record(hung, 17.0, 5.0)["error"] == "no answer for 6s (timeout 5s)"


def test_the_mesh_sources_run_together(repo, mesh_home, anchor_process):
    home = MeshHome(str(mesh_home))
    sleeper = anchor_process()
    (mesh_home / "sessions" / "w-1").mkdir(parents=True)
    (mesh_home / "sessions" / "w-1" / "session.json").write_text(json.dumps(peer(
        sleeper.pid, id="w-1")))
    branch(repo, "w", ("new.txt", "n\n"))
    sources, _ = snapshot.sources(home, snapshot.Link(home), str(repo))
    with collector.Collector(sources) as c:
        wait_until(lambda: all(r["age"] is not None for r in c.snapshot().values()))
        snap = c.snapshot()
    assert snap["procs"]["data"]["w-1"]["procs"] == 1
    assert snap["git"]["data"]["w"]["forecast"] == "clean"
    assert snap["gpus"]["data"]["gpus"] or snap["gpus"]["data"]["absent"]
    health = snap["health"]["data"]  # meshctl status's reader: Redis and the registry
    assert health["redis"]["up"] is False  # never started for the asking
    assert not (mesh_home / "redis" / "redis.pid").exists()
    assert [p["id"] for p in health["peers"]] == ["w-1"]
    assert isinstance(snap["events"]["data"], list)  # the log, without Redis
    assert snap["services"]["data"] == [] and snap["offload"]["data"] == []
    json.dumps(snap)  # plain data


def test_mesh_sources_refuse_a_bad_table_before_any_frame(repo, mesh_home):
    settings_from(mesh_home, '[[dash.offload]]\nname = "x"\nurl = "http://h"\nkind = "x"\n')
    with pytest.raises(ConfigError, match=r"config.toml:4: \[\[dash.offload\]\] #1 kind"):
        collector.mesh_sources(MeshHome(str(mesh_home)), str(repo))
