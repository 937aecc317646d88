"""Nobody but the mesh's owner reaches its Redis or reads its files, and nobody talks to a
mesh they did not know existed."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from meshtools.core import errors
from meshtools.core.home import MeshHome
from meshtools.queue.connection import connect
from meshtools.queue.server import EmbeddedRedis, binary

from .helpers import redis_of, wait_until

BIN = os.path.dirname(sys.executable)


@pytest.fixture
def long_home(tmp_path, monkeypatch):
    """MESH_HOME too long for a socket inside it; its server is stopped at the end."""
    home = tmp_path / ("x" * 100) / "mesh"
    monkeypatch.setenv("MESH_HOME", str(home))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    yield home
    EmbeddedRedis(MeshHome(str(home))).stop()


@pytest.fixture
def foreign_redis(tmp_path):
    """Start someone else's redis-server on a socket path (killed at the end)."""
    started = []

    def _start(socket, password=None):
        workdir = tmp_path / f"foreign{len(started)}"
        workdir.mkdir()
        argv = [binary(), "--port", "0", "--unixsocket", socket, "--dir", str(workdir),
                "--save", "", "--appendonly", "no"]
        if password:
            argv += ["--requirepass", password]
        started.append((subprocess.Popen(argv, stdout=subprocess.DEVNULL), socket))
        wait_until(lambda: os.path.exists(socket))

    yield _start
    for p, socket in started:
        p.kill()
        p.wait()
        if os.path.exists(socket):
            os.unlink(socket)


@pytest.mark.parametrize("password", [None, "theirs"])
def test_a_foreign_redis_on_the_mesh_socket_is_refused(run, mesh_home, foreign_redis, password):
    server = EmbeddedRedis(MeshHome(str(mesh_home)))
    server.start()
    redis_of(mesh_home).set("mine", "1")
    os.unlink(server.socket)  # what another user with access to the directory could do
    foreign_redis(server.socket, password)
    with pytest.raises(errors.Unavailable, match="not the mesh's own Redis"):
        connect(MeshHome(str(mesh_home)))
    pushed = run("queue-push", "echo pwned")
    assert pushed.returncode == 69 and "not the mesh's own Redis" in pushed.stderr
    assert len(pushed.stderr.strip().splitlines()) == 1
    status = run("mesh-redis", "status", "--json")
    assert status.returncode == 1
    assert status.records[0]["running"] is False
    assert "not the mesh's own" in status.records[0]["error"]


def test_a_client_never_reconnects_to_a_server_swapped_in_later(mesh_home, foreign_redis):
    import redis

    server = EmbeddedRedis(MeshHome(str(mesh_home)))
    server.start()
    client = redis_of(mesh_home)
    assert client.ping()
    socket = server.socket
    server.stop()
    os.makedirs(os.path.dirname(socket), mode=0o700, exist_ok=True)
    foreign_redis(socket)  # no password: it takes any AUTH
    with pytest.raises(redis.AuthenticationError, match="not the mesh's redis-server"):
        client.ping()


def test_an_impostor_that_echoes_the_password_never_gets_it(run, mesh_home, tmp_path):
    """The client proved the server was the mesh's own by what the server said, after
    sending it the password: an impostor that says OK to any AUTH and answers CONFIG GET
    requirepass with the password it was just sent passed, and had the password. The peer
    of the socket must be the mesh's redis-server process before a word goes to it."""
    server = EmbeddedRedis(MeshHome(str(mesh_home)))
    server.start()
    heard = tmp_path / "heard"
    impostor = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                 "fakes", "resp_impostor.py"), server.socket, str(heard)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert impostor.stdout.readline() == "ready\n"  # on the socket, the real one alive
        with pytest.raises(errors.Unavailable, match="not the mesh's own Redis"):
            connect(MeshHome(str(mesh_home)))
        pushed = run("queue-push", "echo pwned")
        assert pushed.returncode == 69 and "not the mesh's own Redis" in pushed.stderr
        assert server.password() not in (heard.read_text() if heard.exists() else "")
    finally:
        impostor.kill()
        impostor.wait()


def test_the_password_is_private_and_never_on_the_command_line(mesh_home):
    import redis

    server = EmbeddedRedis(MeshHome(str(mesh_home)))
    server.start()
    secret = (mesh_home / "redis" / "secret").read_text().strip()
    assert len(secret) >= 32
    assert stat.S_IMODE(os.stat(mesh_home / "redis" / "secret").st_mode) == 0o600
    with open(f"/proc/{server.pid()}/cmdline", "rb") as f:
        assert secret.encode() not in f.read()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=server.socket).ping()
    assert redis_of(mesh_home).ping()
    server.stop()
    assert server.start()  # the same secret across restarts: clients keep working
    assert (mesh_home / "redis" / "secret").read_text().strip() == secret


def test_a_server_started_without_a_password_is_refused_until_restarted(run, tmp_path,
                                                                       monkeypatch):
    """An upgrade: an older meshtools started the server, with no password. Short home: the
    socket lives inside it, where the older meshtools put it."""
    home = tempfile.mkdtemp(prefix="ms-")
    monkeypatch.setenv("MESH_HOME", home)
    server = EmbeddedRedis(MeshHome(home))
    os.makedirs(server.dir, mode=0o700)
    subprocess.run([binary(), "--port", "0", "--unixsocket", server.socket, "--dir", server.dir,
                    "--daemonize", "yes", "--pidfile", server.pidfile, "--save", "",
                    "--logfile", os.path.join(server.dir, "redis.log")], check=True)
    try:
        wait_until(server.running)
        old = server.pid()
        for argv in (["queue-push", "echo hi"], ["mesh-redis", "start"]):
            result = run(*argv)
            assert result.returncode == 69, result.stderr
            assert "mesh-redis stop && mesh-redis start" in result.stderr
        assert server.pid() == old  # not a second server on the same files
        run("mesh-redis", "stop", check=0)
        run("mesh-redis", "start", check=0)
        run("queue-push", "echo hi", check=0)
    finally:
        server.stop()
        shutil.rmtree(home)


def test_a_socket_directory_not_private_to_us_is_never_used(long_home):
    server = EmbeddedRedis(MeshHome(str(long_home)))
    server.start()
    first = server.socket_dir
    assert not first.startswith(str(long_home))
    server.stop()
    assert not os.path.exists(first)  # no litter in /tmp
    planted = tempfile.mkdtemp(prefix="planted-")
    try:
        os.chmod(planted, 0o777)
        (long_home / "redis" / "socket-dir").write_text(planted + "\n")
        with pytest.raises(errors.ConfigError, match="refusing the Redis socket directory"):
            connect(MeshHome(str(long_home)), start=False)
        server.start()
        assert server.socket_dir != planted and os.listdir(planted) == []
        st = os.lstat(server.socket_dir)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
        assert redis_of(long_home).ping()
    finally:
        shutil.rmtree(planted)


def test_the_runtime_dir_is_used_only_when_it_is_ours(long_home, monkeypatch):
    runtime = tempfile.mkdtemp(prefix="xdg-")
    try:
        server = EmbeddedRedis(MeshHome(str(long_home)))
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
        server.start()
        assert os.path.dirname(server.socket_dir) == runtime
        server.stop()
        os.chmod(runtime, 0o777)  # sudo's inherited one, or anyone's: not ours alone
        server.start()
        assert not server.socket_dir.startswith(runtime)
        assert redis_of(long_home).ping()
    finally:
        shutil.rmtree(runtime)


OWNER, OTHER = 65533, 65534  # two users that are not root


def as_user(uid, *argv, env=None):
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           *argv], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="acting as two other users needs root and setpriv")
def test_another_user_cannot_plant_the_socket_directory():
    """issue 13: nobody made /tmp/meshtools-<uid> 0777 before the owner started the mesh,
    then swapped the socket for their own server."""
    base = tempfile.mkdtemp(prefix="meshsec-", dir="/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, "h" * 90, "mesh")  # too long for a socket inside it
    os.makedirs(os.path.dirname(home))
    os.chown(os.path.dirname(home), OWNER, OWNER)
    planted = f"/tmp/meshtools-{OWNER}"
    shutil.rmtree(planted, ignore_errors=True)  # this test's own uid: nobody else's
    env = {"PATH": os.environ["PATH"], "MESH_HOME": home, "HOME": base}
    try:
        assert as_user(OTHER, "mkdir", "-m", "777", planted).returncode == 0
        started = as_user(OWNER, os.path.join(BIN, "mesh-redis"), "start", "--json", env=env)
        assert started.returncode in (0, 69, 78), started.stderr
        if started.returncode == 0:
            socket = json.loads(started.stdout)["url"].removeprefix("unix://")
            assert not socket.startswith(planted + "/")
            st = os.lstat(os.path.dirname(socket))
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == OWNER and not st.st_mode & 0o077
        assert os.listdir(planted) == []
    finally:
        as_user(OWNER, os.path.join(BIN, "mesh-redis"), "stop", env=env)
        shutil.rmtree(planted, ignore_errors=True)
        shutil.rmtree(base)


def test_nothing_in_mesh_home_is_open_to_others(run, repo, mesh_home, anchor_process):
    run("meshctl", "init", "--no-agents", check=0)
    run("queue-push", "--id", "t1", "echo hi", check=0)
    run("queue-drain", "--burst", check=0)
    run("coord-register", "--role", "builder", "--id", "b1", "--pid",
        str(anchor_process().pid), check=0)
    run("coord-send", "b1", "hello", check=0)
    run("coord-recv", "--as", "b1", check=0)
    open_to_others = []
    for root, dirs, files in os.walk(mesh_home):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            if os.lstat(name).st_mode & 0o077:
                open_to_others.append(f"{name} {stat.filemode(os.lstat(name).st_mode)}")
    assert open_to_others == []
    assert (mesh_home / "redis" / "appendonly.aof").exists()


@pytest.mark.parametrize("argv", [["coord-register", "--role", "builder"],
                                  ["queue-push", "echo hi"], ["mesh-spawn", "builder"],
                                  ["meshctl", "home"]])
def test_outside_a_repository_there_is_no_mesh(run, tmp_path, monkeypatch, argv):
    """issue 8 #8: a hidden mesh under ~/.local/state, with a Redis of its own, used to
    answer; now the command says where a mesh could be."""
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    monkeypatch.delenv("MESH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    hidden = tmp_path / ".local" / "state" / "meshtools"
    try:
        result = run(*argv, cwd=elsewhere)
        assert result.returncode == 78
        assert result.stderr.strip().splitlines() == [
            f"{argv[0]}: not inside a git repository: cd into one, or pass --home DIR / "
            "set MESH_HOME"]
        assert not hidden.exists()
    finally:
        EmbeddedRedis(MeshHome(str(hidden))).stop()


def test_what_needs_no_mesh_works_outside_a_repository(run, tmp_path, monkeypatch):
    monkeypatch.delenv("MESH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert "builder" in run("mesh-roles", "--json", check=0, cwd=tmp_path).stdout
    run("mesh-roles", "show", "builder", check=0, cwd=tmp_path)
    run("coord-register", "--help", check=0, cwd=tmp_path)
