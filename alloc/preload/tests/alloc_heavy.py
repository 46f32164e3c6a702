"""Allocation-heavy Python for libtessera.so's CI stage: dicts, lists, strings, tuples,
objects and big byte buffers created and dropped in bulk. Prints a checksum that does
not depend on the allocator (or on hash randomisation): .ci/preload.sh compares it
between runs with and without LD_PRELOAD, and with PYTHONMALLOC=malloc, which sends every
object through malloc instead of pymalloc's arenas."""

import hashlib
import json
import sys


class Node:
    __slots__ = ("key", "children", "payload")

    def __init__(self, key, payload):
        self.key = key
        self.children = []
        self.payload = payload


def build_tree(n):
    nodes = [Node(i, "n%d" % i * (i % 5 + 1)) for i in range(n)]
    for i in range(1, n):
        nodes[(i * 7919) % i].children.append(nodes[i])
    total, stack = 0, [nodes[0]]
    while stack:
        node = stack.pop()
        total += node.key + len(node.payload)
        stack.extend(node.children)
    return total


def main():
    digest = hashlib.sha256()
    for rnd in range(4):
        # Dicts of strings, rebuilt and dropped.
        table = {}
        for i in range(60000):
            key = "key-%d-%d" % (rnd, (i * 2654435761) % 1000003)
            table[key] = [i, str(i) * (i % 7), (i, key)]
        for key in list(table)[::3]:
            del table[key]
        digest.update(json.dumps(sorted(table.items())[:2000]).encode())
        digest.update(str(len(table)).encode())
        # Lists growing and shrinking by realloc.
        lists = [[j for j in range(i % 300)] for i in range(5000)]
        digest.update(str(sum(len(x) for x in lists)).encode())
        del lists
        # String building and slicing.
        parts = []
        for i in range(40000):
            parts.append(("%x" % (i * 40503)) * (1 + i % 9))
        text = "|".join(parts)
        digest.update(text[::97].encode())
        pieces = text.split("|")
        digest.update(str(len(pieces)).encode())
        # Objects with pointers between them.
        digest.update(str(build_tree(30000)).encode())
        # Big buffers (large spans and huge mappings).
        blobs = [bytearray(b"x") * (1 << (10 + i % 14)) for i in range(40)]
        for i, blob in enumerate(blobs):
            blob[len(blob) // 2] = i
        digest.update(bytes(b[len(b) // 2] for b in blobs))
        del blobs
    print("python checksum", digest.hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
