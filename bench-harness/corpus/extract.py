#!/usr/bin/env python3
"""Rebuilds syslog-lines.txt from public parser test suites (run from this directory).

    ./extract.py RSYSLOG_GIT SYSLOG_NG_GIT GO_SYSLOG_GIT > upstream.txt

Each block starts with a `# from:` line naming the repository, commit, path and licence of the
lines below it. Lines are escaped (see README.md in this directory): `\\n`, `\\r`, `\\t`, `\\\\`
and `\\xNN` for every other byte outside printable ASCII and UTF-8.
"""
import re
import shlex
import subprocess
import sys


def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], check=True,
                          capture_output=True).stdout


def escape(b: bytes) -> str:
    out = []
    text = b.decode("utf-8", errors="surrogateescape")
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append("\\x%02x" % (o - 0xDC00))
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


def c_unescape(s: str) -> bytes:
    out = bytearray()
    i = 0
    raw = s.encode("utf-8")
    while i < len(raw):
        c = raw[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        n = chr(raw[i + 1])
        i += 2
        if n == "x":
            m = re.match(rb"[0-9a-fA-F]{1,2}", raw[i:])
            out.append(int(m.group(0), 16))
            i += len(m.group(0))
        elif n in "01234567":
            m = re.match(rb"[0-7]{1,3}", raw[i - 1:])
            out.append(int(m.group(0), 8))
            i += len(m.group(0)) - 1
        else:
            out += {"n": b"\n", "r": b"\r", "t": b"\t"}.get(n, n.encode())
    return bytes(out)


C_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def c_messages(text: str):
    """String literals (adjacent ones joined) that start with `<` in a C test file."""
    found = []
    # Join adjacent literals: "a" "b" -> "ab".
    for m in re.finditer(r'((?:"(?:[^"\\\n]|\\.)*"\s*)+)', text):
        parts = C_LITERAL.findall(m.group(1))
        joined = b"".join(c_unescape(p) for p in parts)
        if joined.startswith(b"<") and len(joined) > 3 and b"%s" not in joined:
            found.append(joined)
    return found


def go_messages(text: str):
    """Inputs of go-syslog's table tests: `[]byte("...")` and `[]byte(`...`)`."""
    found = []
    for m in re.finditer(r'\[\]byte\((?:"((?:[^"\\\n]|\\.)*)"|`([^`]*)`)\)', text):
        data = c_unescape(m.group(1)) if m.group(1) is not None else m.group(2).encode()
        if data.startswith(b"<") and len(data) > 3:
            found.append(data)
    return found


def shell_messages(text: str):
    """Messages rsyslog's tests send with `tcpflood ... -M MSG` or `injectmsg_literal MSG`."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(("tcpflood", "injectmsg_literal", "injectmsg2_literal")):
            continue
        if "$" in line or "`" in line:
            continue
        try:
            words = shlex.split(line, comments=False)
        except ValueError:
            continue
        msg = None
        if words[0] in ("injectmsg_literal", "injectmsg2_literal") and len(words) > 1:
            msg = words[1]
        elif "-M" in words:
            i = words.index("-M")
            if i + 1 < len(words):
                msg = words[i + 1]
        if msg is None:
            continue
        if len(msg) >= 2 and msg[0] == '"' and msg[-1] == '"':
            msg = msg[1:-1]
        if msg:
            found.append(msg.encode("utf-8", errors="surrogateescape"))
    return found


def emit(header, messages, seen):
    fresh = []
    for m in messages:
        if m not in seen:
            seen.add(m)
            fresh.append(m)
    if not fresh:
        return
    print("# from: " + header)
    for m in fresh:
        print(escape(m))
    print()


def main():
    rsyslog, syslog_ng, go_syslog = sys.argv[1], sys.argv[2], sys.argv[3]
    seen = set()
    rs_commit = git(rsyslog, "rev-parse", "HEAD").decode().strip()
    ng_commit = git(syslog_ng, "rev-parse", "HEAD").decode().strip()
    for path in ["lib/tests/test_msgparse.c", "modules/syslogformat/tests/test_syslog_format.c"]:
        text = git(syslog_ng, "show", f"HEAD:{path}").decode("utf-8", errors="surrogateescape")
        emit(f"github.com/syslog-ng/syslog-ng@{ng_commit} {path} (LGPL-2.1-or-later)",
             c_messages(text), seen)
    go_commit = git(go_syslog, "rev-parse", "HEAD").decode().strip()
    for path in ["rfc5424/machine_test.go", "rfc5424/parser_test.go"]:
        text = git(go_syslog, "show", f"HEAD:{path}").decode("utf-8", errors="surrogateescape")
        emit(f"github.com/leodido/go-syslog@{go_commit} {path} (MIT)", go_messages(text), seen)
    paths = git(rsyslog, "ls-tree", "-r", "--name-only", "HEAD", "tests").decode().split()
    for path in sorted(p for p in paths if p.endswith(".sh")):
        text = git(rsyslog, "show", f"HEAD:{path}").decode("utf-8", errors="surrogateescape")
        emit(f"github.com/rsyslog/rsyslog@{rs_commit} {path} (GPL-3.0-or-later test suite)",
             shell_messages(text), seen)
    for path in sorted(p for p in paths if p.startswith("tests/fuzz/corpus/syslog-message/")):
        data = git(rsyslog, "show", f"HEAD:{path}").rstrip(b"\n")
        emit(f"github.com/rsyslog/rsyslog@{rs_commit} {path} (GPL-3.0-or-later test suite)",
             [data], seen)


if __name__ == "__main__":
    main()
