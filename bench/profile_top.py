"""The top entries of a py-spy profile, as shares of its samples: what the closing notes of #16 quote.

    python bench/profile_top.py PROFILE.txt [--top 15] [--thread SUBSTR]

PROFILE.txt is what ``--profile DIR`` of ``a2a_proxy.py`` or ``heartbeats.py`` writes (py-spy's ``raw``
format: one collapsed stack per line, then its sample count). A frame's line number is dropped, so a
function counts once however many lines of it were sampled. "own" is where the sample was taken (the
innermost frame), "inclusive" is every function on the stack, counted once per sample: the first says
where the CPU went, the second which caller it went through. With ``--threads`` stacks (the benches'),
the samples are also split by thread, so the loop's share can be read apart from the commit thread's.
A trio task's stack starts at its coroutine, not at the loop, so ``--match molecule_box/`` keeps the
inclusive list to the box's own functions.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """``handle (molecule_box/proxy/service.py:120)`` -> ``handle (molecule_box/proxy/service.py)``."""
    return _FRAME_LINE.sub(")", frame.strip())


def read(path: Path, thread: str | None) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        frames = m["stack"].split(";")
        if thread is not None and (not frames[0].startswith("thread") or thread not in frames[0]):
            continue
        stacks.append((frames, int(m["count"])))
    return stacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--thread", help="only the samples of threads whose name contains this")
    parser.add_argument("--match", help="inclusive: only functions whose file contains this (e.g. molecule_box/)")
    args = parser.parse_args(argv)
    stacks = read(args.profile, args.thread)
    total = sum(count for _, count in stacks)
    if not total:
        print(f"{args.profile}: no samples", file=sys.stderr)
        return 1
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if frames[0].startswith("thread"):
            threads[frames[0]] += count
            frames = frames[1:]
        if not frames:
            continue
        own[frame_name(frames[-1])] += count
        for name in {frame_name(f) for f in frames}:
            inclusive[name] += count
    print(f"{args.profile}: {total} samples")
    if threads:
        print("\nby thread")
        for name, count in threads.most_common(args.top):
            print(f"  {100 * count / total:5.1f} %  {name}")
    if args.match:
        inclusive = collections.Counter({k: v for k, v in inclusive.items() if args.match in k})
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n{title}")
        for name, count in counter.most_common(args.top):
            print(f"  {100 * count / total:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
