"""Images → the model (issue 17): what is accepted, the caps, which models take images,
and the whole path on the real server: rows in ``attachments``, content parts at the
provider on both stream paths, the authorized route that serves a chip its image, and a
refusal with the reason (nothing stored) for a model that takes no images."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import httpx
import pytest

from r3nb.engine import images
from r3nb.engine.models import ModelConfig, ModelRegistry
from r3nb.errors import BadRequest, PayloadTooLarge
from r3nb.protocol import IMAGE_MIMES, MAX_IMAGE_BYTES, MAX_IMAGES
from tests.client import Api
from tests.conftest import PROVIDER_KEY
from tests.provider import FakeProvider


def png(width: int = 2, height: int = 2) -> bytes:
    """A real, tiny PNG (grey pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


SAMPLES = {
    "image/png": png(),
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32),
    "image/gif": b"GIF89a\x01\x00\x01\x00" + bytes(16),
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(24),
}


def upload(data: bytes, name: str = "plot.png", mime: str | None = "image/png") -> dict[str, Any]:
    item = {"kind": "image", "name": name, "data": base64.b64encode(data).decode()}
    return item | ({"mime": mime} if mime else {})


# --- what is accepted (fast) ----------------------------------------------------------


def test_every_accepted_type_is_recognised_by_its_bytes() -> None:
    assert set(SAMPLES) == IMAGE_MIMES
    for mime, data in SAMPLES.items():
        assert images.sniff(data) == mime


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"<?xml version='1.0'?><svg/>",
        b"<html><img src=x onerror=alert(1)></html>",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # RIFF, but audio
        b"xxxxxxxxWEBP",  # WEBP where it belongs, without RIFF
        b"\x89PNG",  # the start of a PNG signature only
        b"",
    ],
)
def test_anything_else_is_refused_whatever_it_claims(data: bytes) -> None:
    assert images.sniff(data) is None
    with pytest.raises(BadRequest, match="not a PNG, JPEG, GIF or WebP"):
        images.decode(upload(data, "x.svg", mime="image/png"))


def test_the_claimed_type_must_be_the_real_one() -> None:
    with pytest.raises(BadRequest, match="says it is image/jpeg but is image/png"):
        images.decode(upload(png(), mime="image/jpeg"))
    assert images.decode(upload(png(), mime=None)) == ("plot.png", "image/png", png())


def test_an_image_of_exactly_the_cap_passes_and_one_byte_more_is_413() -> None:
    at_cap = png() + bytes(MAX_IMAGE_BYTES - len(png()))
    assert images.decode(upload(at_cap))[2] == at_cap
    with pytest.raises(PayloadTooLarge, match="larger than 5 MB"):
        images.decode(upload(at_cap + b"\x00"))


def test_data_that_is_not_base64_is_refused() -> None:
    with pytest.raises(BadRequest, match="not base64"):
        images.decode({"kind": "image", "name": "p.png", "data": "not base64 at all!"})
    with pytest.raises(BadRequest, match="'name' and 'data'"):
        images.decode({"kind": "image", "name": "p.png"})


def test_more_images_than_the_cap_per_message_are_refused() -> None:
    images.check_count([{}] * MAX_IMAGES)
    with pytest.raises(BadRequest, match=f"at most {MAX_IMAGES} images"):
        images.check_count([{}] * (MAX_IMAGES + 1))


def _model(litellm_model: str, vision: bool | None = None) -> ModelConfig:
    return ModelConfig(name="m", params={"model": litellm_model}, vision=vision)


def test_the_entry_decides_else_litellm_s_model_info() -> None:
    assert images.supports_images(_model("openai/gpt-4o")) is True  # litellm: supports_vision
    assert images.supports_images(_model("openai/fake")) is False  # unknown to litellm
    assert images.supports_images(_model("openai/fake", vision=True)) is True
    assert images.supports_images(_model("openai/gpt-4o", vision=False)) is False
    with pytest.raises(BadRequest, match="does not take images"):
        images.refuse_unless_supported(_model("openai/fake"))


def test_a_model_entry_says_vision_with_a_boolean_only() -> None:
    entry = {"model": "openai/x", "api_key": "k"}
    registry = ModelRegistry({"v": entry | {"vision": True}, "w": entry}, environ={})
    assert [registry.get(n).vision for n in ("v", "w")] == [True, None]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"\['vision'\] must be true or false"):
        ModelRegistry({"v": entry | {"vision": "yes"}}, environ={})


# --- the whole path on a real server ---------------------------------------------------


@pytest.fixture
def r3nb_config(provider: FakeProvider) -> dict[str, Any]:
    base = {"model": "openai/fake", "api_base": provider.url, "api_key": PROVIDER_KEY}
    return {
        "models": {
            "eyes": base | {"vision": True, "stream_path": "litellm"},
            "eyes-lean": base | {"vision": True},
            "blind": base | {"stream_path": "litellm"},
        },
        "default_model": "blind",
    }


def _image_parts(request: dict[str, Any]) -> list[str]:
    return [
        part["image_url"]["url"]
        for message in request["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


@pytest.mark.parametrize("model", ["eyes", "eyes-lean"])
async def test_an_image_reaches_the_model_as_a_content_part_and_is_stored_as_a_row(
    api: Api, provider: FakeProvider, engine: Any, model: str
) -> None:
    cid = await api.conversation()
    result = await api.send(
        cid, "what does this plot show?", model=model, attachments=[upload(png())]
    )
    assert result["done"]["message"]["status"] == "complete"
    data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    assert _image_parts(provider.requests[-1]) == [data_url]
    text_part = provider.requests[-1]["messages"][-1]["content"][0]
    assert text_part == {"type": "text", "text": "what does this plot show?"}

    user = result["start"]["user_message"]
    [chip] = user["attachments"]
    assert chip == {
        "kind": "image", "name": "plot.png", "id": chip["id"], "mime": "image/png",
        "size": len(png()),
    }  # fmt: skip
    assert "base64" not in user["content"]
    assert "data" not in chip
    rows = await engine.store.get_attachments([chip["id"]])
    assert rows[chip["id"]].data == png()
    assert rows[chip["id"]].message_id == user["id"]

    # The next turn sends the earlier image again (it is part of the conversation).
    await api.send(cid, "and now?", model=model)
    assert _image_parts(provider.requests[-1]) == [data_url]


async def test_the_chip_s_image_is_served_to_those_who_may_read_the_conversation(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    result = await api.send(cid, "look", model="eyes", attachments=[upload(png())])
    aid = result["start"]["user_message"]["attachments"][0]["id"]
    r = await api.client.get(f"conversations/{cid}/attachments/{aid}")
    assert r.status_code == 200
    assert r.content == png()
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    other = await api.conversation()
    status, body = await api.call("GET", f"conversations/{other}/attachments/{aid}")
    assert status == 404
    assert "no attachment" in body["error"]
    await api.ok("DELETE", f"conversations/{cid}")
    status, _ = await api.call("GET", f"conversations/{cid}/attachments/{aid}")
    assert status == 404
    async with httpx.AsyncClient(base_url=api.base) as stranger:  # no token, no cookie
        unauthenticated = await stranger.get(f"conversations/{other}/attachments/{aid}")
    assert unauthenticated.status_code == 403


async def test_a_model_without_images_refuses_before_anything_is_stored_or_sent(
    api: Api, provider: FakeProvider, engine: Any
) -> None:
    cid = await api.conversation()
    status, body = await api.call(
        "POST",
        f"conversations/{cid}/messages",
        {"content": "what is this?", "model": "blind", "attachments": [upload(png())]},
    )
    assert status == 400
    assert "'blind' does not take images" in body["error"]
    assert provider.requests == []
    snapshot = await api.ok("GET", f"conversations/{cid}")
    assert snapshot["messages"] == []


async def test_too_large_too_many_and_svg_are_refused_with_a_reason(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    path = f"conversations/{cid}/messages"
    big = png() + bytes(MAX_IMAGE_BYTES)
    status, body = await api.call(
        "POST", path, {"content": "q", "model": "eyes", "attachments": [upload(big)]}
    )
    assert (status, body["error"]) == (413, "image 'plot.png' is larger than 5 MB")
    many = [upload(png(), f"p{i}.png") for i in range(MAX_IMAGES + 1)]
    status, body = await api.call(
        "POST", path, {"content": "q", "model": "eyes", "attachments": many}
    )
    assert status == 400
    assert f"at most {MAX_IMAGES} images" in body["error"]
    svg = upload(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "p.svg", "image/svg+xml")
    status, body = await api.call(
        "POST", path, {"content": "q", "model": "eyes", "attachments": [svg]}
    )
    assert status == 400
    assert "SVG is not accepted" in body["error"]
    assert provider.requests == []
