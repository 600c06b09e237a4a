"""A throwaway Kubernetes control plane (etcd + kube-apiserver) on loopback.

Integration tests run the operator against a real kube-apiserver, not a mock,
so that watches, RBAC, CRD validation and finalizers behave as in a cluster.
There is no kube-controller-manager, scheduler or kubelet: see docs/testing.md
for what that changes.

Binaries come from ``KUBEBUILDER_ASSETS`` when it names a directory holding
``kube-apiserver`` and ``etcd``; otherwise ``build.sh`` builds them from source
through the Go module proxy (a no-op once they are in the cache).

Every child runs in its own session (process group) so it never sees the
terminal's Ctrl-C and can be killed as a whole; an ``atexit`` hook, SIGTERM and
SIGINT handlers and the Linux parent-death signal make sure none outlives the
Python process that started it. This module does not import pytest.

Run ``python -m tests.envtest.controlplane`` from the repo root for a control
plane to poke at by hand (it prints a KUBECONFIG and waits for Ctrl-C).
"""

from __future__ import annotations

import atexit
import base64
import collections
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ENVTEST_DIR = Path(__file__).resolve().parent
BUILD_SH = ENVTEST_DIR / "build.sh"
VERSIONS_ENV = ENVTEST_DIR / "versions.env"

ADMIN_USER = "admin"
OPERATOR_USER = "trm-sre-operator"
# A cold kube-apiserver on 2 busy cores needs 10-30 s; 90 s leaves room for a
# machine that is also compiling or running other tests.
READY_TIMEOUT = 90.0
STOP_GRACE = 5.0


class EnvtestError(RuntimeError):
    """The test control plane (or Alertmanager) could not be built or started."""


# --------------------------------------------------------------------------
# Child processes and the safety net that kills them
# --------------------------------------------------------------------------

_live: dict[int, ManagedProcess] = {}
# Re-entrant: the signal handler may run while the main thread holds it.
_live_lock = threading.RLock()
_safety_net_installed = False


def _kill_all_children() -> None:
    """Kill every child still registered; called at exit and on SIGTERM/SIGINT."""
    with _live_lock:
        procs = list(_live.values())
    # Newest first: kube-apiserver before etcd. etcd's graceful stop waits for
    # the apiserver's open watch streams, and an apiserver whose etcd is gone
    # retries instead of exiting, so the other order costs two kill timeouts.
    for proc in reversed(procs):
        proc.stop()


def _chain_signal(signum: int, previous: object) -> Callable[[int, FrameType | None], None]:
    """A handler that kills the children first, then does what was there before."""

    def handler(sig: int, frame: FrameType | None) -> None:
        _kill_all_children()
        if callable(previous):
            previous(sig, frame)
        else:
            # SIG_DFL: die by the same signal so the exit status stays honest.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler


def _install_safety_net() -> None:
    global _safety_net_installed
    if _safety_net_installed:
        return
    _safety_net_installed = True
    atexit.register(_kill_all_children)
    # signal.signal only works in the main thread; other threads still get
    # atexit and the parent-death signal.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if previous != signal.SIG_IGN:  # an ignored signal must not kill children either
                signal.signal(signum, _chain_signal(signum, previous))


def _death_signal_prefix() -> list[str]:
    """Wrap commands in setpriv so the kernel SIGKILLs them if we die by SIGKILL.

    setpriv execs the target, so the PID (and process group) stay the same.
    The signal fires when the *thread* that spawned the child exits, so start
    children from a thread that lives as long as they should (pytest's main).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


@dataclass
class ManagedProcess:
    """One long-running child with its own process group and log file."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        _install_safety_net()
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                _death_signal_prefix() + self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group; no terminal signals
            )
        with _live_lock:
            _live[self.popen.pid] = self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise EnvtestError(f"{self.name} was never started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the whole process group, SIGKILL it after `grace` s. Idempotent."""
        popen = self.popen
        if popen is None:
            return
        _signal_group(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=grace)  # a timeout keeps this safe inside a signal handler
        except subprocess.TimeoutExpired:
            pass
        # Also SIGKILL when the leader is gone: a grandchild may still hold the group.
        _signal_group(popen.pid, signal.SIGKILL)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        with _live_lock:
            _live.pop(popen.pid, None)
        self.popen = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                tail = collections.deque(f, maxlen=lines)
        except OSError as exc:
            return f"(no log: {exc})"
        return b"".join(tail).decode(errors="replace")


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def wait_until(
    what: str,
    check: Callable[[], bool],
    procs: Iterable[ManagedProcess],
    timeout: float,
    interval: float = 0.25,
) -> None:
    """Poll `check` until true; fail early, with log tails, if a process dies."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        dead = [p for p in procs if not p.alive()]
        if dead:
            raise EnvtestError(f"{dead[0].name} exited while waiting for {what}:\n{_tails(procs)}")
        if check():
            return
        if time.monotonic() > deadline:
            raise EnvtestError(f"timed out after {timeout:.0f} s waiting for {what}:\n{_tails(procs)}")
        time.sleep(interval)


def _tails(procs: Iterable[ManagedProcess]) -> str:
    return "\n".join(f"--- last lines of {p.log_path} ---\n{p.log_tail()}" for p in procs)


def free_port() -> int:
    """A loopback port that was free a moment ago (races are retried by callers)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports: all sockets stay open until all are picked."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def http_ok(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> bool:
    """True when GET `url` answers 2xx within 2 s; any error counts as not yet."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


# --------------------------------------------------------------------------
# Finding or building the binaries
# --------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """K8S_VERSION, ETCD_VERSION, ALERTMANAGER_VERSION from versions.env."""
    out: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip("'\"")
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("TRM_SRE_CACHE") or Path.home() / ".cache" / "trm-sre")


def build_component(component: str) -> Path:
    """Run build.sh for one component and return the directory of its binaries.

    A file lock serialises builds from concurrent test processes, because
    build.sh writes into a fixed `<dir>.tmp`. Progress goes to our stderr; on
    failure the error carries the last lines of it.
    """
    lock_path = cache_dir() / "bin" / f".build-{component}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _run_build_sh(component)


def _run_build_sh(component: str) -> Path:
    proc = subprocess.Popen(
        ["bash", str(BUILD_SH), component],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    tail: collections.deque[str] = collections.deque(maxlen=60)
    for line in proc.stderr:  # tee: visible live, kept for the error message
        sys.stderr.write(line)
        tail.append(line)
    rc = proc.wait()
    reader.join()
    lines = "".join(stdout_chunks).split()
    if rc != 0 or not lines:
        raise EnvtestError(
            f"{BUILD_SH} {component} failed (exit {rc}); needs Go >= the go.mod version "
            f"and the Go module proxy. Last output:\n{''.join(tail)}"
        )
    return Path(lines[-1])


@dataclass(frozen=True)
class KubeBinaries:
    bin_dir: Path  # holds kube-apiserver and etcd (usable as KUBEBUILDER_ASSETS)
    kube_apiserver: Path
    etcd: Path
    kubectl: Path


def _has_control_plane(d: Path) -> bool:
    return (d / "kube-apiserver").is_file() and (d / "etcd").is_file()


def find_kube_binaries() -> KubeBinaries:
    """KUBEBUILDER_ASSETS if it is complete, else the cached (or fresh) build."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and _has_control_plane(Path(assets)):
        bin_dir = Path(assets)
        return KubeBinaries(bin_dir, bin_dir / "kube-apiserver", bin_dir / "etcd", _pick_kubectl(bin_dir))
    etcd_dir = build_component("etcd")
    kube_dir = build_component("kube")
    bin_dir = _assets_dir(kube_dir, etcd_dir)
    return KubeBinaries(bin_dir, bin_dir / "kube-apiserver", bin_dir / "etcd", bin_dir / "kubectl")


def _pick_kubectl(assets: Path) -> Path:
    """kubectl beside the assets, else our v1.35 build, else PATH, else build it.

    A system kubectl may be far older than the apiserver (Debian's is 1.20),
    so the one built from source wins over PATH.
    """
    built = cache_dir() / "bin" / f"kube-{versions()['K8S_VERSION']}" / "kubectl"
    on_path = shutil.which("kubectl")
    for candidate in (assets / "kubectl", built, Path(on_path) if on_path else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return build_component("kube") / "kubectl"


def _assets_dir(kube_dir: Path, etcd_dir: Path) -> Path:
    """One directory of symlinks to etcd, kube-apiserver and kubectl.

    build.sh keeps each component in its own versioned directory; tools that
    follow the envtest convention (KUBEBUILDER_ASSETS) want them together.
    """
    v = versions()
    target = cache_dir() / "bin" / f"assets-{v['K8S_VERSION']}-{v['ETCD_VERSION']}"
    if _has_control_plane(target) and (target / "kubectl").exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".assets-", dir=target.parent))
    for name, src in (("kube-apiserver", kube_dir), ("kubectl", kube_dir), ("etcd", etcd_dir)):
        (tmp / name).symlink_to(src / name)
    try:
        tmp.rename(target)
    except OSError:  # another process made it first (or a stale one exists)
        shutil.rmtree(tmp, ignore_errors=True)
        if not _has_control_plane(target):
            shutil.rmtree(target, ignore_errors=True)
            return _assets_dir(kube_dir, etcd_dir)
    return target


# --------------------------------------------------------------------------
# Credentials and kubeconfigs
# --------------------------------------------------------------------------


def _make_service_account_key(pki: Path) -> tuple[Path, Path]:
    """RSA key pair for signing service-account tokens.

    The openssl CLI, because the project's venv has no `cryptography` and
    Debian always has openssl.
    """
    key, pub = pki / "sa.key", pki / "sa.pub"
    for cmd in (
        ["openssl", "genrsa", "-out", str(key), "2048"],
        ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
    ):
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise EnvtestError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return key, pub


def _write_token_file(pki: Path, admin_token: str, operator_token: str) -> Path:
    # Columns: token,user,uid[,"group1,group2"]. The operator user gets no
    # group, so only RBAC that a test applies can grant it anything.
    path = pki / "tokens.csv"
    path.write_text(
        f'{admin_token},{ADMIN_USER},{ADMIN_USER}-uid,"system:masters"\n'
        f"{operator_token},{OPERATOR_USER},{OPERATOR_USER}-uid\n"
    )
    path.chmod(0o600)
    return path


def write_kubeconfig(path: Path, *, server: str, ca_file: Path, user: str, token: str) -> Path:
    """A single-context kubeconfig for `user`, with the CA inlined.

    Written as JSON, which is valid YAML, so no YAML library is needed. The CA
    is inlined so the file still works if copied elsewhere.
    """
    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "envtest", "user": user}}],
        "current-context": user,
        "preferences": {},
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------


class KubectlError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"


@dataclass
class ControlPlane:
    workdir: Path
    server: str
    ca_file: Path
    admin_token: str
    operator_token: str
    kubeconfig: Path  # admin (system:masters)
    operator_kubeconfig: Path  # user trm-sre-operator, no groups
    bin_dir: Path  # kube-apiserver and etcd
    kubectl_bin: Path
    _etcd: ManagedProcess = field(repr=False)
    _apiserver: ManagedProcess = field(repr=False)
    _remove_workdir: bool = field(default=False, repr=False)
    #: The apiserver's audit log (JSON lines), when started with an `audit_policy`.
    audit_log: Path | None = None

    def audit_events(self) -> list[dict[str, object]]:
        """Every event in the audit log so far (empty without an audit policy).

        The log backend writes each event before the request returns (its
        default "blocking" mode), so a call that has finished is already here.
        A line still being written (the last one) is skipped.
        """
        if self.audit_log is None or not self.audit_log.is_file():
            return []
        events = []
        for line in self.audit_log.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    @property
    def etcd_pid(self) -> int:
        return self._etcd.pid

    @property
    def apiserver_pid(self) -> int:
        return self._apiserver.pid

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (admin unless `kubeconfig` says otherwise)."""
        cmd = [
            str(self.kubectl_bin),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            # A private discovery cache: ~/.kube/cache is shared with other runs.
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        res = subprocess.run(cmd, check=False, input=input, text=True, capture_output=True, timeout=timeout, env=env)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def write_kubeconfig(self, path: Path, *, user: str = OPERATOR_USER, token: str | None = None) -> Path:
        """Write a kubeconfig for `user` (by default the non-privileged operator user)."""
        if token is None:
            token = {ADMIN_USER: self.admin_token, OPERATOR_USER: self.operator_token}[user]
        return write_kubeconfig(path, server=self.server, ca_file=self.ca_file, user=user, token=token)

    def ready(self) -> bool:
        return http_ok(f"{self.server}/readyz", token=self.admin_token, context=_ssl_context(self.ca_file))

    def restart_apiserver(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd (fault tests)."""
        self._apiserver.stop()
        self._apiserver.start()
        _wait_apiserver_ready(self._apiserver, self._etcd, self.server, self.ca_file, self.admin_token, timeout)

    def stop(self) -> None:
        """Kill kube-apiserver, then etcd, with their process groups. Idempotent."""
        self._apiserver.stop()
        self._etcd.stop()
        if self._remove_workdir and os.environ.get("TRM_SRE_KEEP_ENVTEST") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)


def _ssl_context(ca_file: Path) -> ssl.SSLContext | None:
    if not ca_file.is_file():  # kube-apiserver writes it shortly after it starts
        return None
    return ssl.create_default_context(cafile=str(ca_file))


def _wait_apiserver_ready(
    apiserver: ManagedProcess, etcd: ManagedProcess, server: str, ca_file: Path, token: str, timeout: float
) -> None:
    def ready() -> bool:
        ctx = _ssl_context(ca_file)
        return ctx is not None and http_ok(f"{server}/readyz", token=token, context=ctx)

    wait_until(f"kube-apiserver /readyz at {server}", ready, [apiserver, etcd], timeout)


def _etcd_process(bins: KubeBinaries, workdir: Path, client_port: int, peer_port: int) -> ManagedProcess:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    args = [
        str(bins.etcd),
        "--name=trm-sre",
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=trm-sre={peer}",
        "--unsafe-no-fsync=true",  # throwaway data: skip fsync, much faster on slow disks
    ]
    return ManagedProcess("etcd", args, workdir / "etcd.log")


def _apiserver_process(
    bins: KubeBinaries,
    workdir: Path,
    etcd_port: int,
    port: int,
    sa: tuple[Path, Path],
    tokens: Path,
    extra_args: list[str] | None = None,
) -> ManagedProcess:
    sa_key, sa_pub = sa
    args = [
        str(bins.kube_apiserver),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        # Without it the apiserver looks for a default route and exits offline.
        "--advertise-address=127.0.0.1",
        # Loopback is not a valid endpoint for the `kubernetes` Service.
        "--endpoint-reconciler-type=none",
        # No --tls-cert-file: it self-signs apiserver.crt (cert + CA) here.
        f"--cert-dir={workdir / 'pki'}",
        "--service-cluster-ip-range=10.0.0.0/24",
        f"--service-account-issuer=https://127.0.0.1:{port}/",
        f"--service-account-key-file={sa_pub}",
        f"--service-account-signing-key-file={sa_key}",
        f"--token-auth-file={tokens}",
        "--authorization-mode=RBAC",
        # No controller-manager creates `default` ServiceAccounts.
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        *(extra_args or []),
    ]
    return ManagedProcess("kube-apiserver", args, workdir / "kube-apiserver.log")


def _port_clash(*procs: ManagedProcess) -> bool:
    return any("address already in use" in p.log_tail(80) for p in procs)


def _launch(
    bins: KubeBinaries,
    workdir: Path,
    sa: tuple[Path, Path],
    tokens: Path,
    admin_token: str,
    timeout: float,
    extra_args: list[str] | None = None,
) -> tuple[ManagedProcess, ManagedProcess, str]:
    """Start etcd, then kube-apiserver; retry with new ports if one was taken meanwhile."""
    for attempt in range(3):
        etcd_port, peer_port, api_port = free_ports(3)
        etcd = _etcd_process(bins, workdir, etcd_port, peer_port)
        apiserver = _apiserver_process(bins, workdir, etcd_port, api_port, sa, tokens, extra_args)
        server = f"https://127.0.0.1:{api_port}"
        try:
            etcd.start()
            etcd_health = f"http://127.0.0.1:{etcd_port}/health"
            wait_until("etcd /health", lambda url=etcd_health: http_ok(url), [etcd], timeout)
            apiserver.start()
            _wait_apiserver_ready(apiserver, etcd, server, workdir / "pki" / "apiserver.crt", admin_token, timeout)
            return etcd, apiserver, server
        except BaseException as exc:
            apiserver.stop()
            etcd.stop()
            if not (isinstance(exc, EnvtestError) and _port_clash(etcd, apiserver) and attempt < 2):
                raise
            shutil.rmtree(workdir / "etcd", ignore_errors=True)
    raise AssertionError("unreachable")


def _audit_args(workdir: Path, audit_policy: str | dict[str, object]) -> tuple[list[str], Path]:
    """Flags for the log audit backend: the policy written to a file, the log beside it.

    `audit_policy` is an `audit.k8s.io/v1` Policy as a dict (written as JSON,
    which is valid YAML) or as YAML text.
    """
    policy_file = workdir / "audit-policy.yaml"
    text = audit_policy if isinstance(audit_policy, str) else json.dumps(audit_policy, indent=2)
    policy_file.write_text(text)
    log_path = workdir / "audit.log"
    return [f"--audit-policy-file={policy_file}", f"--audit-log-path={log_path}", "--audit-log-format=json"], log_path


#: Every request at Metadata level: who, which verb, which resource (no bodies).
METADATA_AUDIT_POLICY: dict[str, object] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request, when its response is complete (long watches included).
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata"}],
}


def start_control_plane(
    workdir: Path | None = None,
    *,
    timeout: float = READY_TIMEOUT,
    audit_policy: str | dict[str, object] | None = None,
) -> ControlPlane:
    """Start etcd + kube-apiserver on free loopback ports and wait until ready.

    With no `workdir` a temp dir is used and removed by stop() (kept when
    TRM_SRE_KEEP_ENVTEST=1). Raises EnvtestError, never skips.

    With `audit_policy` (e.g. `METADATA_AUDIT_POLICY`) the apiserver writes an
    audit log (`ControlPlane.audit_log`, read with `audit_events()`): what a
    user actually asked of the API, for least-privilege tests.
    """
    bins = find_kube_binaries()
    remove = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="trm-sre-cp-")) if workdir is None else Path(workdir)
    pki = workdir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    sa = _make_service_account_key(pki)
    admin_token, operator_token = secrets.token_hex(16), secrets.token_hex(16)
    tokens = _write_token_file(pki, admin_token, operator_token)
    extra_args: list[str] = []
    audit_log: Path | None = None
    if audit_policy is not None:
        extra_args, audit_log = _audit_args(workdir, audit_policy)
    etcd, apiserver, server = _launch(bins, workdir, sa, tokens, admin_token, timeout, extra_args)
    ca_file = pki / "apiserver.crt"
    return ControlPlane(
        workdir=workdir,
        server=server,
        ca_file=ca_file,
        admin_token=admin_token,
        operator_token=operator_token,
        kubeconfig=write_kubeconfig(
            workdir / "kubeconfig", server=server, ca_file=ca_file, user=ADMIN_USER, token=admin_token
        ),
        operator_kubeconfig=write_kubeconfig(
            workdir / "operator.kubeconfig", server=server, ca_file=ca_file, user=OPERATOR_USER, token=operator_token
        ),
        bin_dir=bins.bin_dir,
        kubectl_bin=bins.kubectl,
        _etcd=etcd,
        _apiserver=apiserver,
        _remove_workdir=remove,
        audit_log=audit_log,
    )


def _main() -> None:
    """Start a control plane for manual use and keep it until Ctrl-C."""
    t0 = time.monotonic()
    cp = start_control_plane()
    print(f"# ready in {time.monotonic() - t0:.1f} s; workdir {cp.workdir}", flush=True)
    print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
    print(f"# operator user: KUBECONFIG={cp.operator_kubeconfig}", flush=True)
    try:
        while cp._apiserver.alive():
            time.sleep(1)
    finally:
        cp.stop()


if __name__ == "__main__":
    _main()
