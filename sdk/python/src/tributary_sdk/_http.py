"""HTTP with retries for the sync and async clients. Every request the SDK makes is idempotent
(reads, erasure, and writes that carry a message id), so retrying after an unknown outcome is safe."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx

from tributary_sdk import __version__
from tributary_sdk._core import RetryPolicy
from tributary_sdk.errors import NetworkError, TributaryError, ValidationError, error_for, is_retryable

log = logging.getLogger("tributary_sdk")

Query = list[tuple[str, str]]


def client_headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "User-Agent": f"tributary-sdk-python/{__version__}",
        "Accept": "application/json",
    }


def decode(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer, or the typed error for anything else."""
    try:
        body = response.json() if response.content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
        if response.is_success:
            raise ValidationError(
                "the server's answer is not JSON", status=response.status_code, code="bad_response"
            ) from None
    if response.is_success:
        return body
    raise error_for(response.status_code, body, response.headers)


class SyncHttp:
    def __init__(self, api_key: str, base_url: str, timeout: float, retry: RetryPolicy) -> None:
        self.retry = retry
        self.client = httpx.Client(base_url=base_url, headers=client_headers(api_key), timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        query: Query | None = None,
        retries: bool = True,
    ) -> Any:
        attempt = 0
        while True:
            try:
                return decode(self._send(method, path, content, query))
            except TributaryError as error:
                if not (retries and is_retryable(error)) or attempt >= self.retry.max_retries:
                    raise
                delay = self.retry.delay(attempt, error)
                log.info("tributary: %s %s failed (%r); retrying in %.2fs", method, path, error, delay)
                time.sleep(delay)
                attempt += 1

    def _send(self, method: str, path: str, content: bytes | None, query: Query | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return self.client.request(
                method, path, content=content, params=tuple(query or ()), headers=headers
            )
        except httpx.TransportError as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.client.close()


class AsyncHttp:
    def __init__(self, api_key: str, base_url: str, timeout: float, retry: RetryPolicy) -> None:
        self.retry = retry
        self.client = httpx.AsyncClient(base_url=base_url, headers=client_headers(api_key), timeout=timeout)

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        query: Query | None = None,
        retries: bool = True,
    ) -> Any:
        attempt = 0
        while True:
            try:
                return decode(await self._send(method, path, content, query))
            except TributaryError as error:
                if not (retries and is_retryable(error)) or attempt >= self.retry.max_retries:
                    raise
                delay = self.retry.delay(attempt, error)
                log.info("tributary: %s %s failed (%r); retrying in %.2fs", method, path, error, delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def _send(
        self, method: str, path: str, content: bytes | None, query: Query | None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return await self.client.request(
                method, path, content=content, params=tuple(query or ()), headers=headers
            )
        except httpx.TransportError as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()
