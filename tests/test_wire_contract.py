"""One wire contract: ``r3nb/protocol.py`` is the source, and everything else must agree.

- ``js/src/protocol.js``: every ``@typedef`` of an object names the same fields, equally
  optional, as the TypedDict of the same name; string-literal unions and exported
  constants equal their Python counterparts.
- The README: its API table lists exactly the routes of ``engine/api.py``; its field lists
  of a message and a conversation are the TypedDicts' keys.
- The real server (a Jupyter server with r3nb, over HTTP and SSE): every reply has the
  keys its TypedDict declares, all required ones, none undeclared, with values of the
  declared kinds (``Literal`` values included).
- Names (environment variables, headers) are spelled once in r3nb's Python code, and the
  kernel modules import without a cycle.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import httpx
import pytest

from r3nb import protocol
from r3nb.engine.api import ROUTES
from r3nb.errors import R3nbError, RateLimited, StoreUnavailable
from r3nb.kernel.client import R3nbClientError, ServerClient
from tests.client import Api
from tests.provider import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_JS = ROOT / "js" / "src" / "protocol.js"
README = ROOT / "README.md"

TYPEDDICTS: dict[str, Any] = {
    name: value for name, value in vars(protocol).items() if is_typeddict(value)
}


# --- protocol.js --------------------------------------------------------------------


def _braced(text: str, start: int) -> tuple[str, int]:
    """The text inside the braces opening at ``start``, and the index after them."""
    assert text[start] == "{", text[start : start + 40]
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    raise AssertionError(f"unbalanced braces at {text[start : start + 60]!r}")


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside brackets of any kind."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"{": 1, "[": 1, "(": 1, "<": 1, "}": -1, "]": -1, ")": -1, ">": -1}.get(char, 0)
        if char == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _inline_fields(body: str) -> dict[str, bool]:
    """``a: T, b?: U`` → {"a": False, "b": True} (field → optional)."""
    fields = {}
    for item in filter(str.strip, _split_top(body, ",")):
        match = re.match(r"\s*(\w+)(\??)\s*:", item)
        assert match, f"cannot read the inline field {item!r} in protocol.js"
        fields[match[1]] = bool(match[2])
    return fields


def js_typedefs() -> tuple[dict[str, dict[str, bool]], dict[str, str]]:
    """protocol.js's object typedefs as {name: {field: optional}}, and its other
    typedefs (unions, aliases) as {name: type text}."""
    objects: dict[str, dict[str, bool]] = {}
    aliases: dict[str, str] = {}
    source = PROTOCOL_JS.read_text(encoding="utf-8")
    for block in re.findall(r"/\*\*(.*?)\*/", source, re.S):
        text = "\n".join(re.sub(r"^\s*\*?\s?", "", line) for line in block.splitlines())
        at = text.find("@typedef")
        if at < 0:
            continue
        type_text, end = _braced(text, text.index("{", at))
        name_match = re.match(r"\s*(\w+)", text[end:])
        assert name_match, f"a @typedef without a name: {text[at : at + 80]!r}"
        name = name_match[1]
        if type_text.strip() == "object":
            fields = {}
            for prop in re.finditer(r"@property\s+", text):
                _, after = _braced(text, prop.end())
                field = re.match(r"\s*(\[)?(\w+)\]?", text[after:])
                assert field, f"{name}: cannot read {text[prop.start() : prop.start() + 60]!r}"
                fields[field[2]] = bool(field[1])
            objects[name] = fields
        elif "{" in type_text or "&" in type_text:  # ``Base & { extra?: T }`` or ``{ a: T }``
            fields = {}
            for part in map(str.strip, _split_top(type_text, "&")):
                if part.startswith("{"):
                    fields.update(_inline_fields(_braced(part, 0)[0]))
                else:
                    assert part in objects, f"{name}: {part} must be declared before it"
                    fields.update(objects[part])
            objects[name] = fields
        else:
            aliases[name] = type_text.strip()
    return objects, aliases


def _fields(typed_dict: Any) -> dict[str, bool]:
    return {key: key in typed_dict.__optional_keys__ for key in get_type_hints(typed_dict)}


def test_protocol_js_typedefs_have_the_fields_of_the_typeddicts() -> None:
    objects, _ = js_typedefs()
    assert sorted(objects) == sorted(TYPEDDICTS), "protocol.js and protocol.py declare other shapes"
    for name, typed_dict in TYPEDDICTS.items():
        python, js = _fields(typed_dict), objects[name]
        differences = {
            key: {"protocol.py": python.get(key), "protocol.js": js.get(key)}
            for key in python.keys() | js.keys()
            if python.get(key) != js.get(key)
        }
        # None: the field is missing there; True/False: it is optional or required.
        assert not differences, f"{name} differs (field → optional?): {differences}"


def _literal_values(text: str) -> set[str] | None:
    """``"a" | "b"`` → {"a", "b"}; None for any other type."""
    parts = [part.strip() for part in text.split("|")]
    if not all(re.fullmatch(r'"[^"]*"', part) for part in parts):
        return None
    return {part.strip('"') for part in parts}


def test_protocol_js_string_unions_equal_the_python_literals() -> None:
    _, aliases = js_typedefs()
    unions = {name: _literal_values(text) for name, text in aliases.items()}
    unions = {name: values for name, values in unions.items() if values is not None}
    assert {"Status", "Role", "Source", "SseEventName"} <= unions.keys()
    for name, values in unions.items():
        literal = getattr(protocol, name, None)
        assert get_origin(literal) is Literal, f"protocol.py has no Literal {name}"
        assert set(get_args(literal)) == values, name


def js_constants() -> dict[str, Any]:
    """protocol.js's ``export const NAME = <number | new Set([...])>``."""
    source = PROTOCOL_JS.read_text(encoding="utf-8")
    constants: dict[str, Any] = {}
    for name, value in re.findall(r"^export const (\w+) = (.+?);\s*$", source, re.M):
        if number := re.fullmatch(r"[\d_]+(?:\.[\d_]+)?", value):
            constants[name] = float(number[0].replace("_", ""))
        elif items := re.fullmatch(r"new Set\((\[.*\])\)", value):
            constants[name] = frozenset(json.loads(items[1]))
        else:
            raise AssertionError(f"protocol.js: cannot read the value of {name}: {value}")
    return constants


def test_protocol_js_constants_equal_the_python_ones() -> None:
    constants = js_constants()
    assert {"SSE_HEARTBEAT_SECONDS", "STALL_SECONDS", "FINAL_STATUSES"} <= constants.keys()
    for name, value in constants.items():
        assert hasattr(protocol, name), f"protocol.js exports {name}; protocol.py has none"
        assert getattr(protocol, name) == value, name


def test_the_widget_takes_its_stall_timeout_from_protocol_js() -> None:
    api = (ROOT / "js" / "src" / "api.js").read_text(encoding="utf-8")
    assert re.search(r"STALL_MS = STALL_SECONDS \* 1000;", api), "api.js"


# --- README ---------------------------------------------------------------------------


def _readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_readme_api_table_lists_exactly_the_routes() -> None:
    documented = set()
    for row in re.findall(r"^\| `([^`]+)`", _readme_section("HTTP API"), re.M):
        method, _, path = row.partition(" ")
        if method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            documented.add((method, path.split("?")[0]))
    routes = {(route.method, route.pattern) for route in ROUTES}
    assert documented == routes, {
        "in the README only": sorted(documented - routes),
        "in engine/api.py only": sorted(routes - documented),
    }


def _readme_fields(label: str) -> tuple[set[str], dict[str, set[str]]]:
    """The fields named after ``A message:`` (up to the next blank line or label), and
    the values given in parentheses as ``name (a|b|c)``."""
    section = _readme_section("HTTP API")
    start = section.index(f"\n{label}: ") + len(label) + 3
    ends = [i for i in (section.find("\n\n", start), section.find("\nA ", start)) if i > 0]
    end = min(ends, default=len(section))
    text = section[start:end]
    values = {
        name: set(choices.split("|"))
        for name, choices in re.findall(r"(\w+) \(([\w|]+)\)", text)
        if "|" in choices
    }
    while re.search(r"\([^()]*\)", text):  # remarks in parentheses, nested ones too
        text = re.sub(r"\([^()]*\)", "", text)
    names = {
        name for quoted in re.findall(r"`([^`]*)`", text) for name in re.findall(r"\w+", quoted)
    }
    return names, values


def test_readme_names_the_fields_of_a_message_and_a_conversation() -> None:
    message, values = _readme_fields("A message")
    assert message == set(get_type_hints(protocol.MessageDict)), "README: A message"
    assert values == {
        "status": set(get_args(protocol.Status)),
        "source": set(get_args(protocol.Source)),
    }
    conversation, _ = _readme_fields("A conversation")
    assert conversation == set(get_type_hints(protocol.ConversationDict)), "README: A conversation"


# --- names, spelled once ---------------------------------------------------------------

WIRE_NAMES = {
    name: getattr(protocol, name)
    for name in dir(protocol)
    if name.startswith("ENV_") or name.endswith("_HEADER")
}


def test_wire_names_are_spelled_only_in_protocol_py() -> None:
    assert len(WIRE_NAMES) >= 8, WIRE_NAMES
    spelled: dict[str, list[str]] = {value: [] for value in WIRE_NAMES.values()}
    for path in sorted((ROOT / "r3nb").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in spelled:
                spelled[node.value].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    for value, places in spelled.items():
        assert len(places) == 1, (value, places)
        assert places[0].startswith("r3nb/protocol.py:"), (value, places)


# --- import graph ---------------------------------------------------------------------


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Nodes under ``if TYPE_CHECKING:``: imports for annotations, never run."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped |= set(ast.walk(statement))
    return skipped


def _imports(path: Path, package: str) -> set[str]:
    """r3nb modules ``path`` imports when it runs, lazy imports inside functions too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("r3nb")}


def import_graph() -> dict[str, set[str]]:
    """Module → the r3nb modules it imports. The package itself (``r3nb/__init__.py``)
    is left out: it is the public surface, importing everything lazily by design (so
    ``%load_ext`` stays instant), and modules read ``r3nb.__version__`` from it."""
    modules = {}
    for path in (ROOT / "r3nb").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        modules[name] = (path, package)
    return {
        name: {
            dep for dep in _imports(path, package) if dep in modules and dep not in (name, "r3nb")
        }
        for name, (path, package) in modules.items()
        if name != "r3nb"
    }


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start → … → start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for dep in graph.get(node, ()):
            if dep == start:
                return [*path, start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*path, dep]))
    return None


def test_no_r3nb_module_imports_itself_back() -> None:
    """Lazy imports count: ``kernel/client`` once imported ``kernel/embedded`` inside a
    function while ``embedded`` imported ``client``; ``kernel/connect`` ends that."""
    graph = import_graph()
    assert {"r3nb.kernel.client", "r3nb.kernel.embedded", "r3nb.kernel.connect"} <= graph.keys()
    cycles = {" → ".join(c) for m in graph if (c := _cycle_through(graph, m))}
    assert not cycles, sorted(cycles)


def test_the_client_module_knows_neither_embedded_mode_nor_the_choice() -> None:
    graph = import_graph()
    assert graph["r3nb.kernel.client"].isdisjoint({"r3nb.kernel.embedded", "r3nb.kernel.connect"})


@pytest.mark.parametrize("module", ["client", "embedded", "connect"])
def test_each_kernel_client_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    code = f"import r3nb.kernel.{module}; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr


# --- Retry-After: header and field, and the kernel's client honours it -----------------


@pytest.mark.parametrize(
    "error", [RateLimited("slow down", retry_after=2.2), StoreUnavailable("the file is locked")]
)
def test_429_and_503_say_when_to_retry_in_header_and_body(error: R3nbError) -> None:
    assert error.status in (429, 503)
    seconds = error.extra["retry_after"]
    assert isinstance(seconds, int)
    assert seconds >= 1
    assert error.headers[protocol.RETRY_AFTER_HEADER] == str(seconds)
    assert error.retry_after == seconds


def _client_answering(status: int, body: bytes, headers: dict[str, str]) -> ServerClient:
    client = ServerClient("http://r3nb.invalid/r3nb/api/", "secret")
    client._client = httpx.Client(
        base_url=client.url,
        transport=httpx.MockTransport(
            lambda request: httpx.Response(status, content=body, headers=headers)
        ),
    )
    return client


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"error": "rate limit", "retry_after": 7}', {"Retry-After": "7"}),  # r3nb
        (b"<html>busy</html>", {"Retry-After": "7"}),  # a proxy in front of it
        (b'{"error": "rate limit"}', {"Retry-After": "7"}),  # the header alone
    ],
)
def test_server_client_honours_retry_after(body: bytes, headers: dict[str, str]) -> None:
    client = _client_answering(429, body, headers)
    with pytest.raises(R3nbClientError) as caught:
        client.conversations()
    assert caught.value.retry_after == 7
    assert "retry in 7 s" in str(caught.value)
    with pytest.raises(R3nbClientError) as caught:
        list(client.events("POST", "conversations/0123456789abcdef/messages", {"content": "x"}))
    assert caught.value.retry_after == 7
    client.close()


# --- the real server's replies --------------------------------------------------------


def _kinds(value: Any, hint: Any, where: str) -> list[str]:
    """What in ``value`` does not fit ``hint`` (a TypedDict, a list, a union, a leaf)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return []
    if is_typeddict(hint):
        return _shape(value, hint, where)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        tries = [_kinds(value, arg, where) for arg in args if arg is not type(None)]
        return [] if any(not t for t in tries) else tries[0]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [p for i, item in enumerate(value) for p in _kinds(item, args[0], f"{where}[{i}]")]
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    kinds = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(hint)
    if kinds is None:
        return []
    if (isinstance(value, bool) and hint is not bool) or not isinstance(value, kinds):
        return [f"{where}: {value!r} is not a {hint.__name__}"]
    return []


def _shape(value: Any, typed_dict: Any, where: str) -> list[str]:
    if typed_dict is protocol.SnapshotMessage and isinstance(value, dict) and "offset" in value:
        typed_dict = protocol.MessageUpdate  # a partial update (the client named it in from=)
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not an object ({typed_dict.__name__})"]
    hints = get_type_hints(typed_dict)
    problems = [
        f"{where}: {typed_dict.__name__} requires {key!r}"
        for key in sorted(typed_dict.__required_keys__ - value.keys())
    ]
    problems += [
        f"{where}: {key!r} is not declared in {typed_dict.__name__}"
        for key in sorted(value.keys() - hints.keys())
    ]
    for key in sorted(value.keys() & hints.keys()):
        problems += _kinds(value[key], hints[key], f"{where}.{key}")
    return problems


def assert_shape(value: Any, typed_dict: Any, where: str = "") -> None:
    problems = _shape(value, typed_dict, where or typed_dict.__name__)
    assert not problems, "\n".join(problems)


EVENT_SHAPES = {
    "start": protocol.StartEvent,
    "delta": protocol.DeltaEvent,
    "done": protocol.DoneEvent,
    "error": protocol.StreamError,
    "snapshot": protocol.Snapshot,
}


async def _events(api: Api, method: str, path: str, body: Any = None, **params: Any) -> list[Any]:
    """Every event of a stream, each checked against its TypedDict."""
    events = [event async for event in api.events(method, path, body, **params)]
    names = [name for name, _ in events]
    assert (names[0], names[-1], "delta" in names) == ("start", "done", True), names
    for i, (name, data) in enumerate(events):
        assert name in get_args(protocol.SseEventName), name
        assert_shape(data, EVENT_SHAPES[name], f"{path} event {i} ({name})")
    return events


async def _error(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, reply = await api.call(method, path, body)
    assert status >= 400, (status, reply)
    assert_shape(reply, protocol.ErrorBody, f"{method} {path} → {status}")
    return status, reply


async def _until(condition: typing.Callable[[], typing.Awaitable[Any]]) -> Any:
    for _ in range(200):
        if found := await condition():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_the_server_answers_exactly_the_declared_shapes(
    api: Api, provider: FakeProvider
) -> None:
    P = protocol
    assert_shape(await api.ok("GET", "models"), P.ModelsReply)
    created = await api.ok("POST", "conversations", {"title": "contract"})
    assert_shape(created, P.ConversationReply, "POST conversations")
    cid = created["conversation"]["id"]
    update: P.ConversationUpdate = {"title": "renamed", "system_prompt": "be brief"}
    assert_shape(await api.ok("PATCH", f"conversations/{cid}", update), P.ConversationReply)
    assert_shape(await api.ok("GET", "conversations", limit=5), P.ConversationPage)

    sent = await _events(api, "POST", f"conversations/{cid}/messages", {"content": "hi !tokens=5"})
    first = sent[0][1]
    user, reply = first["user_message"], first["assistant_message"]
    assert user["source"] == "user"  # what the panel's calls are marked, not "browser"
    snapshot = await api.ok("GET", f"conversations/{cid}")
    assert_shape(snapshot, P.Snapshot, "snapshot")
    again = await api.ok("GET", f"conversations/{cid}", since=snapshot["revision"])
    assert_shape(again, P.Snapshot, "snapshot since")
    replay = await _events(api, "GET", f"messages/{reply['id']}/stream", offset=1)
    assert replay[0][1]["user_message"] is None

    # A second version of the reply: ``siblings`` appear; the start has no user message.
    regenerated = await _events(
        api, "POST", f"conversations/{cid}/messages/{reply['id']}/regenerate", {}
    )
    assert regenerated[0][1]["user_message"] is None
    snapshot = await api.ok("GET", f"conversations/{cid}")
    assert any("siblings" in m for m in snapshot["messages"]), snapshot
    assert_shape(snapshot, P.Snapshot, "snapshot with versions")
    await _events(
        api, "POST", f"conversations/{cid}/messages/{user['id']}/edit", {"content": "hey !tokens=3"}
    )

    # While a reply streams: a partial update in the snapshot, a 409 naming the reply.
    index = len(provider.requests)
    streaming = asyncio.create_task(api.send(cid, "more !tokens=20 !gate=3"))
    await provider.await_sent(index, 3)

    async def flushed() -> Any:
        snap = await api.ok("GET", f"conversations/{cid}")
        live = [m for m in snap["messages"] if m["status"] == "streaming" and m["content"]]
        return live[0] if live else None

    live = await _until(flushed)
    partial = await api.ok("GET", f"conversations/{cid}", since=0, **{"from": f"{live['id']}:1"})
    assert any("offset" in m for m in partial["messages"]), partial
    assert_shape(partial, P.Snapshot, "snapshot with a partial update")
    status, conflict = await _error(api, "POST", f"conversations/{cid}/messages", {"content": "x"})
    assert (status, conflict.get("message_id")) == (409, live["id"])
    cancelled = await api.ok("POST", f"messages/{live['id']}/cancel", {})
    assert_shape(cancelled, P.MessageReply, "cancel")
    provider.release()
    await streaming

    head: P.HeadRequest = {"message_id": user["id"]}
    assert_shape(await api.ok("POST", f"conversations/{cid}/head", head), P.ConversationReply)
    assert_shape(await api.ok("POST", f"conversations/{cid}/clear"), P.ConversationReply)
    assert_shape(
        await api.ok("DELETE", f"conversations/{cid}/messages/{user['id']}"), P.DeleteTurnReply
    )
    status, _ = await _error(api, "GET", "conversations/0123456789abcdef")
    assert status == 404
    await _error(api, "POST", f"conversations/{cid}/messages", {"content": ""})


@pytest.mark.parametrize("r3nb_config", [{"rate_limit_per_minute": 1}])
async def test_a_429_carries_retry_after_as_header_and_field_and_the_kernel_client_says_when(
    api: Api, r3nb_config: dict[str, Any]
) -> None:
    await api.ok("POST", "conversations", {})
    refused_http = await api.client.post("conversations", json={})
    assert refused_http.status_code == 429
    body = refused_http.json()
    assert_shape(body, protocol.ErrorBody, "429")
    assert refused_http.headers[protocol.RETRY_AFTER_HEADER] == str(body["retry_after"])

    client = ServerClient(api.base, os.environ[protocol.ENV_SECRET])
    try:
        with pytest.raises(R3nbClientError) as refused:
            await asyncio.to_thread(client.create_conversation, "one too many")
    finally:
        client.close()
    assert refused.value.status == 429
    assert refused.value.retry_after is not None
    assert refused.value.retry_after >= 1
    assert f"retry in {refused.value.retry_after:g} s" in str(refused.value)
