"""Read a POST's fields, from an HTML form or a JSON body."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request


async def request_fields(request: Request) -> dict[str, Any]:
    """Fields of a urlencoded form or a JSON object; anything unreadable gives no fields
    (the handler then refuses for the missing ones). Forms are parsed with the stdlib:
    `request.form()` would need python-multipart."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
