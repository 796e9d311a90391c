"""Resource caps for one sandboxed kernel, then ``exec`` of the sandbox command.

Run as a script by path (``python -I -S limits.py ...``), so that it imports nothing from gmcourse:

    limits.py MEMORY_BYTES CPU_SECONDS FILE_BYTES PROCESSES CGROUP_DIRS -- COMMAND...

The caps are the kernel's own rlimits, inherited by everything the kernel starts: the address
space (``RLIMIT_AS``, the memory cap), CPU seconds (``RLIMIT_CPU``: SIGXCPU, then SIGKILL), the
size of any one file it writes (``RLIMIT_FSIZE``) and, where the kernel counts them for this user,
processes (``RLIMIT_NPROC``). ``CGROUP_DIRS`` (``:``-separated, may be empty) are cgroups that the
grader created with a ``pids`` cap; this process joins them before it becomes the sandbox, so the
process cap holds for root too, for whom ``RLIMIT_NPROC`` does not count.
"""

import os
import resource
import sys


def _processes_of_this_user():
    uid, count = str(os.getuid()), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as status:
                count += any(line.startswith("Uid:") and line.split()[1] == uid for line in status)
        except OSError:
            pass
    return count


def main(argv):
    if "--" not in argv or argv.index("--") != 5:
        sys.exit("usage: limits.py MEMORY_BYTES CPU_SECONDS FILE_BYTES PROCESSES CGROUP_DIRS -- COMMAND...")
    memory, cpu, file_size, processes = (int(a) for a in argv[:4])
    cgroups = [d for d in argv[4].split(":") if d]
    command = argv[6:]
    for cgroup in cgroups:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    if os.getuid() != 0:  # root is exempt from RLIMIT_NPROC; the cgroup caps it instead
        allowed = _processes_of_this_user() + processes  # the limit counts all of the user's processes
        resource.setrlimit(resource.RLIMIT_NPROC, (allowed, allowed))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
