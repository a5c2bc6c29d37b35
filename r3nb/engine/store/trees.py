"""Each conversation's branch tree (``branches.Tree``: ids, parents, marks, head), kept
in memory for the conversations in use, so that snapshots, the model's context and
sibling lists need no query for it.

The trees are written by the DB thread (in step with every write) and read by the loop
(polls answered from memory), so every access holds ``lock``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from r3nb.engine.branches import Tree
from r3nb.protocol import ConversationDict, MessageDict

#: Conversation trees (ids and parents) kept in memory; others are read again when used.
TREE_MEMORY = 2_000

#: Conversation header, its changed messages, the revision they are consistent with,
#: and whether anything streams: what a snapshot's branch view is made from.
Found = tuple[ConversationDict, list[MessageDict], int, bool]


class TreeCache:
    """The least recently used trees go first when there are more than ``capacity``."""

    def __init__(self, capacity: int = TREE_MEMORY) -> None:
        self.lock = threading.Lock()
        self.capacity = capacity
        self._trees: OrderedDict[str, Tree] = OrderedDict()

    def remember(self, cid: str, tree: Tree) -> None:
        """Keep ``tree`` (``lock`` held)."""
        self._trees[cid] = tree
        self._trees.move_to_end(cid)
        while len(self._trees) > self.capacity:
            self._trees.popitem(last=False)

    def cached(self, cid: str) -> Tree | None:
        """The tree of ``cid`` if in memory (``lock`` held)."""
        tree = self._trees.get(cid)
        if tree is not None:
            self._trees.move_to_end(cid)
        return tree

    def forget(self, cid: str) -> None:
        with self.lock:
            self._trees.pop(cid, None)

    def clear(self) -> None:
        with self.lock:
            self._trees.clear()

    def decorate(self, tree: Tree, message: MessageDict) -> MessageDict:
        """``message`` with its ``siblings``, as clients are given it."""
        with self.lock:
            return decorated(tree, message)

    def branch_view(
        self, tree: Tree, found: Found
    ) -> tuple[ConversationDict, list[MessageDict], int, bool, list[str]]:
        """A snapshot of the current branch: ``found``'s messages on it, decorated, and
        the branch's ids."""
        conversation, messages, revision, streaming = found
        with self.lock:
            kept = [decorated(tree, m) for m in messages if tree.on_branch(m["id"])]
            branch = list(tree.branch())
        return conversation, kept, revision, streaming, branch


def decorated(tree: Tree, message: MessageDict) -> MessageDict:
    """``message`` with ``siblings`` when it has other versions (the lock held).
    A copy: the mirror keeps rows as stored, since a later version would make it stale."""
    siblings = tree.siblings(message["id"])
    return {**message, "siblings": list(siblings)} if len(siblings) > 1 else message
