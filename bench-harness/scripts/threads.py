"""CPU time per thread of a process (snap PID), and the difference per event (diff A B COUNT)."""
import collections
import os
import sys


def snap(pid):
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{task}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm.startswith("iou-"):
            comm = "io_uring workers"
        print(f"{comm}\t{int(fields[11]) + int(fields[12])}")


def load(path):
    ticks = collections.defaultdict(int)
    for line in open(path):
        comm, value = line.rstrip("\n").rsplit("\t", 1)
        ticks[comm] += int(value)
    return ticks


def diff(before, after, count):
    a, b = load(before), load(after)
    hz = os.sysconf("SC_CLK_TCK")
    rows = [(c, (b[c] - a.get(c, 0)) * 1e9 / hz / count) for c in sorted(b)]
    total = sum(ns for _, ns in rows)
    print("CPU ns/event:", " ".join(f"{c}={ns:.0f}" for c, ns in rows if ns >= 5), f"total={total:.0f}")


if __name__ == "__main__":
    if sys.argv[1] == "snap":
        snap(sys.argv[2])
    else:
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
