"""The server's processes, found from their listening ports, and their RSS and CPU time,
read from /proc (Linux).

``find_server_pids([8089, 8080])`` looks up the listening sockets' inodes in
/proc/net/tcp{,6}, then the processes holding them in /proc/*/fd, then adds their
children (a gunicorn master's workers). ``snapshot(pids)`` reads VmRSS (KB) and
utime+stime (seconds) of each.
"""
import os

CLK_TCK = os.sysconf("SC_CLK_TCK")
TCP_LISTEN = "0A"


def listening_inodes(port: int) -> "set[str]":
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) < 10 or fields[3] != TCP_LISTEN:
                        continue
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes


def _pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def pids_holding(inodes: "set[str]", skip=()) -> "set[int]":
    wanted = {f"socket:[{i}]" for i in inodes}
    found = set()
    if not wanted:
        return found
    for pid in _pids():
        if pid in skip:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in wanted:
                    found.add(pid)
                    break
            except OSError:
                continue
    return found


def parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


def children_of(pids: "set[int]") -> "set[int]":
    out = set()
    for pid in _pids():
        if parent_of(pid) in pids:
            out.add(pid)
    return out


def find_server_pids(ports, skip=()) -> "list[int]":
    """Processes listening on any of ``ports``, and their children."""
    inodes = set()
    for port in ports:
        inodes |= listening_inodes(port)
    found = pids_holding(inodes, skip=set(skip) | {os.getpid()})
    found |= children_of(found) - set(skip)
    return sorted(found)


def proc_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:120]
    except OSError:
        return ""


def rss_kb(pid: int) -> "int | None":
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> "float | None":
    """utime + stime of the process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def snapshot(pids) -> dict:
    """{pid: {"rss_kb": .., "cpu_s": ..}} of the processes still alive."""
    out = {}
    for pid in pids:
        rss = rss_kb(pid)
        cpu = cpu_seconds(pid)
        if rss is not None and cpu is not None:
            out[pid] = {"rss_kb": rss, "cpu_s": cpu}
    return out


def total(snap: dict, key: str) -> float:
    return sum(v[key] for v in snap.values())


def delta(before: dict, after: dict, key: str) -> float:
    """Sum over the processes present in both snapshots of after - before."""
    return sum(after[p][key] - before[p][key] for p in after if p in before)
