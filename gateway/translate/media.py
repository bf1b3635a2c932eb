"""Images and PDFs in both formats: OpenAI carries them as (data) URLs, Anthropic as typed sources.

A base64 data URL and an Anthropic base64 source hold the same bytes, so they convert
losslessly; http(s) URLs pass as URL sources. What one side cannot reference (OpenAI file
ids, Anthropic file ids, URL PDFs toward OpenAI, media types Anthropic does not accept)
raises TranslationError rather than being silently dropped.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.translate.errors import TranslationError

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


def openai_image_to_anthropic(image: Any, where: str) -> dict:
    """An OpenAI `image_url` value -> an Anthropic image block."""
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise TranslationError(f"{where}: image_url.url must be a string")
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = _DATA_URL.fullmatch(url)
    if match is None or match["media"] not in _IMAGE_MEDIA_TYPES:
        raise TranslationError(
            f"{where}: images must be http(s) URLs or base64 data URLs of jpeg, png, gif or webp"
        )
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": match["media"], "data": match["data"]},
    }


def openai_file_to_anthropic(file: dict, where: str) -> dict:
    """An OpenAI `file` part value (inline PDF) -> an Anthropic document block."""
    match = _DATA_URL.fullmatch(file.get("file_data") or "")
    if match is None or match["media"] != "application/pdf":
        raise TranslationError(f"{where}: only inline base64 PDF files translate to Anthropic")
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": match["data"]},
    }
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def anthropic_image_to_openai(source: dict, where: str) -> dict:
    """An Anthropic image source -> an OpenAI `image_url` part."""
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif kind == "url":
        url = source["url"]
    else:
        raise TranslationError(f"{where}: image source type {kind!r} has no OpenAI form")
    return {"type": "image_url", "image_url": {"url": url}}


def anthropic_document_to_openai(block: dict, where: str) -> dict:
    """An Anthropic document block (base64 PDF or plain text) -> an OpenAI content part."""
    source = block["source"]
    kind = source.get("type")
    if kind == "text":
        return {"type": "text", "text": source["data"]}
    if kind == "base64" and source.get("media_type") == "application/pdf":
        file = {"file_data": f"data:application/pdf;base64,{source['data']}"}
        file["filename"] = block.get("title") or "document.pdf"
        return {"type": "file", "file": file}
    raise TranslationError(f"{where}: only base64 PDF or text documents translate to OpenAI")
