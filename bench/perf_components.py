#!/usr/bin/env python3
"""Splits a perf profile of gzship into components, as a share of gzship's CPU (issue 15).

    perf record -e cpu-clock -F 1999 --call-graph dwarf,16384 -o run.data -- gzship run ...
    perf script -i run.data -F comm,tid,ip,sym,dso > run.txt
    python3 bench/perf_components.py before.txt after.txt     # one column per profile

A sample is put in a component by its leaf function and, for copies, zeroing and page faults,
by the first gzship/russh/tokio frame that called it. Needs call graphs (dwarf): frame
pointers are missing in the release build.
"""
import collections
import re
import sys

COMPRESSION = re.compile(
    r"deflate_|libdeflate|build_tree|sort_symbols|heapify|heap_sort|crc32_x86|"
    r"compute_length_counts|gen_codewords|make_huffman|hc_matchfinder|bt_matchfinder|"
    r"do_end_block_check|choose_|optimize_|calculate_|flush_|observe_|merge_new|record_"
)
CALLER = re.compile(r"gzship_core::|russh|bytes::|aws_|hyper|tokio")


def samples(path):
    """Yields each sample's frames (leaf first) as 'symbol (dso)' strings."""
    frames = None
    for line in open(path, errors="replace"):
        if not line.strip():
            continue
        if not line.startswith("\t"):
            if frames is not None:
                yield frames
            frames = []
        else:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1])
    if frames is not None:
        yield frames


def caller(frames):
    for f in frames:
        if CALLER.search(f) and "kallsyms" not in f:
            return re.sub(r"\s*\(.*\)$", "", f)
    return "?"


def component(frames):
    leaf = frames[0] if frames else ""
    stack = " ".join(frames)
    if COMPRESSION.search(leaf):
        return "compression (libdeflate, with its CRC-32)"
    if re.search(r"aesni|ghash|gcm", leaf, re.I):
        return "SSH decryption (aes128-gcm)"
    if "kallsyms" in leaf and re.search(r"page_fault|clear_page|folio_zero", stack):
        who = caller(frames)
        if re.search(r"read_ahead|reserve_inner|BufferPool::take|worker::blocks", who) and "MemorySink" not in stack:
            return "page faults: block buffers (worker)"
        if re.search(r"MemorySink|PartAssembler", stack):
            return "page faults: part buffers (assembler)"
        if "copy_from_slice" in who:
            return "page faults: member copy (gzip.rs)"
        return "page faults: russh/SFTP per-packet buffers, other"
    if re.search(r"memmove|memcpy|memset", leaf):
        who = caller(frames)
        if re.search(r"read_ahead|reserve_inner|worker::blocks", who):
            return "memcpy: READ data into blocks (worker)"
        if re.search(r"MemorySink|PartAssembler|copy_from_slice", who):
            return "memcpy: members into parts"
        return "memcpy/memset: russh/SFTP per-packet copies"
    if "sha2::" in leaf or "sha256" in leaf:
        return "SHA-256 (SigV4 payload hash of UploadPart)"
    if "crc32c" in leaf:
        return "CRC32C per part"
    if re.search(r"\bmi_|_mi_", leaf):
        return "allocator (mimalloc)"
    if "kallsyms" in leaf:
        if re.search(r"tcp|skb|sock|inet|recv|send|net_|ip_|__dev|loopback", stack):
            return "kernel: TCP receive/send"
        if re.search(r"schedule|futex|switch|wake|epoll|hrtimer", stack):
            return "kernel: scheduling, futex, epoll"
        return "kernel: other"
    if "ld-linux" in leaf:
        return "other"
    if "russh" in stack or "sftp::session" in stack:
        return "SSH/SFTP framing (russh, gzship's sftp session)"
    if "tokio" in leaf:
        return "tokio runtime"
    return "other"


def shares(path):
    counts = collections.Counter(component(f) for f in samples(path))
    total = sum(counts.values())
    return total, {k: 100.0 * v / total for k, v in counts.items()}


def main():
    results = [shares(p) for p in sys.argv[1:]]
    keys = sorted(set().union(*[s for _, s in results]), key=lambda k: -results[0][1].get(k, 0))
    print("| component | " + " | ".join(sys.argv[1:]) + " |")
    print("|---|" + "---:|" * len(results))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{s.get(k, 0):.1f}%" for _, s in results) + " |")
    print("| samples | " + " | ".join(str(t) for t, _ in results) + " |")


if __name__ == "__main__":
    main()
