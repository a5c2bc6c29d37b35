"""A conversation as a tree of messages: each message follows its ``parent_id``.

Regenerating a reply or editing a prompt adds a sibling instead of overwriting: the old
version stays, and the conversation's ``head_id`` says which branch is current. The
*current branch* is the path from the first message to the head; that is what people
see, what ``history()``/``export()`` return and what the model is sent.

Pure data, no SQL: the store loads one ``Tree`` per conversation (ids and parents only,
small) and keeps it in step with every write.
"""

from __future__ import annotations

from collections.abc import Iterable


class Tree:
    """Parents of one conversation's messages, in creation (``seq``) order, and its head.

    A child is always created after its parent, and a deleted turn's children move to an
    older message, so creation order along any path is the path's order."""

    def __init__(
        self,
        rows: Iterable[tuple[str, str | None]],
        head: str | None,
        marks: dict[str, str] | None = None,
    ) -> None:
        self.parent: dict[str, str | None] = dict(rows)  # insertion order = seq order
        self.head = head
        #: What a person chose for a message's place in the model's context: "pinned"
        #: (always sent) or "excluded" (never sent); unmarked messages are not here.
        self.marks: dict[str, str] = dict(marks or {})
        self._branch: tuple[str, ...] | None = None
        self._on_branch: frozenset[str] = frozenset()
        self._children: dict[str | None, list[str]] | None = None

    def _changed(self) -> None:
        self._branch = None
        self._children = None

    # --- writes ----------------------------------------------------------------------

    def add(self, mid: str, parent: str | None) -> None:
        """A new message: the newest, so it goes last among its parent's children (kept
        up to date, not rebuilt: a rebuild walks every message of the conversation, on
        every send, and long conversations made it a tenth of the DB thread's time)."""
        new = mid not in self.parent
        self.parent[mid] = parent
        self._branch = None
        if not new:
            self._children = None
        elif self._children is not None:
            self._children.setdefault(parent, []).append(mid)

    def set_mark(self, mid: str, mark: str | None) -> None:
        if mark is None:
            self.marks.pop(mid, None)
        else:
            self.marks[mid] = mark

    def set_head(self, head: str | None) -> None:
        self.head = head
        self._branch = None

    def remove_turn(self, prompt: str) -> tuple[list[str], list[str]]:
        """Delete ``prompt`` and every reply to it; what followed a reply now follows the
        prompt's parent. Returns (deleted ids, ids whose parent changed)."""
        above = self.parent[prompt]
        deleted = [prompt, *self.children().get(prompt, [])]
        gone = set(deleted)
        moved = [mid for mid, parent in self.parent.items() if parent in gone and mid not in gone]
        for mid in deleted:
            del self.parent[mid]
            self.marks.pop(mid, None)
        for mid in moved:
            self.parent[mid] = above
        if self.head in gone:
            self.head = above
        self._changed()
        return deleted, moved

    # --- reads -----------------------------------------------------------------------

    def children(self) -> dict[str | None, list[str]]:
        """Each message's children (``None``: the first messages), oldest first."""
        if self._children is None:
            children: dict[str | None, list[str]] = {}
            for mid, parent in self.parent.items():
                children.setdefault(parent, []).append(mid)
            self._children = children
        return self._children

    def path_to(self, mid: str | None) -> list[str]:
        """The ids from the first message down to ``mid`` (empty for ``None``)."""
        path: list[str] = []
        while mid is not None and mid in self.parent and len(path) <= len(self.parent):
            path.append(mid)
            mid = self.parent[mid]
        path.reverse()
        return path

    def branch(self) -> tuple[str, ...]:
        """The current branch, first message first."""
        if self._branch is None:
            self._branch = tuple(self.path_to(self.head))
            self._on_branch = frozenset(self._branch)
        return self._branch

    def on_branch(self, mid: str) -> bool:
        self.branch()
        return mid in self._on_branch

    def siblings(self, mid: str) -> list[str]:
        """``mid`` and the other versions of it (same parent), oldest first."""
        return self.children().get(self.parent.get(mid), [mid]) if mid in self.parent else []

    def newest_leaf(self, mid: str) -> str:
        """The most recently written message under ``mid`` (``mid`` itself if none): where
        a branch switcher lands, so choosing a version shows that version's latest turn."""
        children = self.children()
        newest, stack = mid, [mid]
        order = {m: i for i, m in enumerate(self.parent)}
        while stack:
            node = stack.pop()
            if order[node] > order[newest]:
                newest = node
            stack.extend(children.get(node, []))
        return newest
