"""Talk to a language model through litellm: retries, usage, cost, latency for every call.

litellm is imported on first use only: it costs seconds, and a run whose checks already pass
never needs it.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from agentloop.errors import ModelError

RETRY_STATUS = {408, 409, 429}
LOOPBACK_REFUSED_RETRIES = 1  # a local server that refuses a connection will not come up in the next 25 s
LOOPBACK_HOSTS = ("localhost", "::1", "0.0.0.0")
MODEL_LIST_TIMEOUT = 3.0  # seconds for GET {api_base}/models when a model is not found


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the provider sent it

    def parsed_arguments(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class Attempt:
    """One HTTP attempt, kept even when it failed, so the record shows every call."""

    latency_s: float
    error: str | None = None
    status: int | None = None


@dataclass
class ModelReply:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_note: str | None = None
    latency_s: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    logprobs: Any = None

    def assistant_message(self) -> dict[str, Any]:
        """The reply as a chat message to append to the conversation (OpenAI tool-call format)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Model(Protocol):
    """Anything that turns a conversation into a reply: litellm's (LiteLLMModel), a replay's recorded
    replies (agentloop.run.replay), a test's script (agentloop.run.scripted).

    `deadline`: time.monotonic() past which no request may run (the run's time limit), or None.
    `overrides`: request parameters for this call only, over the model's own (e.g. a warmer temperature).
    A model may also have `warm_up()`: load what its first call needs, so the caller can time it;
    and `ready()` (LazyModel): build it now, failing early if it cannot be built.
    """

    name: str

    def query(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
              deadline: float | None = None, overrides: dict[str, Any] | None = None) -> ModelReply:
        ...


class LazyModel:
    """A Model built on its first use, so that a run whose checks pass never imports litellm.

    `ready()` builds it without calling it: a builder that cannot build (no model configured) fails
    there, before a turn is counted."""

    def __init__(self, name: str, build: Callable[[], Model]):
        self._name, self._build = name, build
        self._model: Model | None = None

    @property
    def name(self) -> str:
        return self._model.name if self._model is not None else self._name

    def ready(self) -> Model:
        if self._model is None:
            self._model = self._build()
        return self._model

    def warm_up(self) -> None:
        warm_up = getattr(self.ready(), "warm_up", None)
        if warm_up is not None:
            warm_up()

    def query(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
              deadline: float | None = None, overrides: dict[str, Any] | None = None) -> ModelReply:
        return self.ready().query(messages, tools, deadline=deadline, overrides=overrides)


class ModelCallFailed(ModelError):
    """Retries did not cure the provider; carries the attempts for the record."""

    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts


class DeadlinePassed(Exception):
    """The run's time limit passed between two attempts: no further request may go out."""


def import_litellm():
    """Import litellm with its network fetch of the price map switched off."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def is_transient(exc: BaseException) -> bool:
    """Retry timeouts, connection failures, 408/409/429 and 5xx; never auth, 400, 404, context."""
    litellm = import_litellm()
    never = (
        litellm.exceptions.ContextWindowExceededError,
        litellm.exceptions.AuthenticationError,
        litellm.exceptions.NotFoundError,
        litellm.exceptions.BadRequestError,
        litellm.exceptions.PermissionDeniedError,
    )
    if isinstance(exc, never):
        return False
    if isinstance(exc, (litellm.exceptions.Timeout, litellm.exceptions.APIConnectionError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in RETRY_STATUS or status >= 500)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _chain(exc: BaseException):
    """The exception and what caused it, down to the socket error litellm and openai wrap."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def connection_failure(exc: BaseException) -> str | None:
    """`refused`, `unreachable` (DNS, no route, connect timeout), or None for an answer from a server."""
    names = [type(e).__name__ for e in _chain(exc)]
    if any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)):
        return "refused"
    if any(n in ("APIConnectionError", "ConnectError", "ConnectTimeout") for n in names):
        return "unreachable"
    return None


def brief(exc: BaseException) -> str:
    """A failed attempt in a few words: `connection refused`, `HTTP 429`, `Timeout`."""
    failure = connection_failure(exc)
    if failure:
        return "connection refused" if failure == "refused" else "server unreachable"
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if isinstance(status, int) else type(exc).__name__


def not_json(exc: BaseException) -> bool:
    """The server answered 200 with a body that is not JSON: a wrong URL, not a passing hiccup."""
    text = str(exc)
    return any(isinstance(e, json.JSONDecodeError) for e in _chain(exc)) or (
        "Expecting " in text and "Received response" in text)


def is_loopback(api_base: str | None) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(api_base or "").hostname or "").lower()
    return host.startswith("127.") or host in LOOPBACK_HOSTS


def short_text(text: str, limit: int = 200) -> str:
    """litellm's message without its repeated class prefixes, cut at a word, not mid-word."""
    import re

    text = " ".join(text.split())
    text = re.sub(r"^(litellm\.\w+: )?(\w+Error: )?(\w+Exception - )?", "", text)
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def key_variable(model: str, api_base: str | None) -> str:
    """The environment variable that holds the key for this model's provider."""
    if api_base:
        return "OPENAI_API_KEY (or AGENTLOOP_API_KEY)"
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    known = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
             "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY", "deepseek": "DEEPSEEK_API_KEY",
             "openrouter": "OPENROUTER_API_KEY", "together_ai": "TOGETHERAI_API_KEY", "xai": "XAI_API_KEY",
             "azure": "AZURE_API_KEY", "cohere": "COHERE_API_KEY", "fireworks_ai": "FIREWORKS_AI_API_KEY"}
    return known.get(provider, f"{provider.upper()}_API_KEY")


def listed_models(api_base: str, timeout: float = MODEL_LIST_TIMEOUT) -> list[str] | None:
    """The model ids an OpenAI-compatible server lists at GET {api_base}/models; None if it does not say."""
    import urllib.request

    request = urllib.request.Request(api_base.rstrip("/") + "/models")
    key = os.environ.get("AGENTLOOP_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the user's own server
            data = json.loads(response.read(1_000_000))
    except (OSError, ValueError):
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]


def describe_failure(exc: BaseException, model: str, api_base: str | None, litellm) -> str:
    """What went wrong and what to do next, in one line, for the errors people actually meet."""
    where = f"the model server at {api_base}" if api_base else f"the provider of {model}"
    status = getattr(exc, "status_code", None)
    failure = connection_failure(exc)
    if failure == "refused":
        return f"cannot connect to {where}: connection refused; is the server running?"
    if failure == "unreachable":
        return f"cannot reach {where}; is the server running and the URL right?" if api_base else \
            f"cannot reach {where}; check your network connection"
    if isinstance(exc, litellm.exceptions.Timeout) or status == 408:
        return f"{where} did not answer in time; a slow local model may need a larger request_timeout"
    if isinstance(exc, (litellm.exceptions.AuthenticationError, litellm.exceptions.PermissionDeniedError)) \
            or status in (401, 403):
        return f"{where} refused the API key ({status or 401}): check {key_variable(model, api_base)}"
    if isinstance(exc, litellm.exceptions.NotFoundError) or status == 404:
        bare = model.split("/", 1)[1] if model.startswith("openai/") else model
        if not api_base:
            return f"model {model} not found (404): check the model name ({short_text(str(exc), 120)})"
        ids = listed_models(api_base)
        if ids and bare in ids:
            return f"{api_base} answered 404 although it lists model {bare!r}: check that the URL ends in /v1"
        if ids:
            shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            return (f"model {bare!r} not found on {api_base}; the server lists: {shown} "
                    f"(pass e.g. -m openai/{ids[0]})")
        return f"nothing found at {api_base} for model {bare!r} (404): check the model name and the URL (/v1)"
    if not_json(exc):
        return (f"{where} answered with something that is not valid JSON, so not a chat completion; "
                "check that the URL points at an OpenAI-compatible API (usually ending in /v1)")
    if isinstance(exc, litellm.exceptions.RateLimitError) or status == 429:
        return f"{where} kept refusing for rate limits (429); wait a little, or lower max_turns"
    if isinstance(exc, litellm.exceptions.ContextWindowExceededError):
        return f"the conversation no longer fits the model's context window ({short_text(str(exc), 120)})"
    return f"{type(exc).__name__}: {short_text(str(exc))}"


class LiteLLMModel:
    """Any provider litellm supports, including local OpenAI-compatible servers via api_base."""

    def __init__(
        self,
        name: str,
        *,
        api_base: str | None = None,
        params: dict[str, Any] | None = None,
        retries: int = 4,
        retry_max_wait: float = 30.0,
        request_timeout: float = 600.0,
        retry_min_wait: float = 1.0,
        on_retry: Callable[[int, str], None] | None = None,
    ):
        if api_base and "/" not in name:
            name = f"openai/{name}"  # a bare name against a custom server: speak OpenAI's protocol
        self.name = name
        self.api_base = api_base
        self.params = dict(params or {})
        self.retries = retries
        self.retry_min_wait = retry_min_wait
        self.retry_max_wait = retry_max_wait
        self.request_timeout = request_timeout
        self.on_retry = on_retry  # told before each retry: attempt, last error

    def warm_up(self) -> None:
        """Import litellm now, so that the caller can check its time limit before a request goes out."""
        import_litellm()

    def _call_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.request_timeout, "num_retries": 0, "max_retries": 0}
        if self.api_base:
            kwargs["api_base"] = self.api_base
            # Local servers need no key, but the OpenAI client insists on one.
            key = os.environ.get("AGENTLOOP_API_KEY") or os.environ.get("OPENAI_API_KEY")
            kwargs["api_key"] = key or "no-key-needed"
        elif os.environ.get("AGENTLOOP_API_KEY"):
            kwargs["api_key"] = os.environ["AGENTLOOP_API_KEY"]
        return kwargs | self.params

    def query(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
              deadline: float | None = None, overrides: dict[str, Any] | None = None) -> ModelReply:
        litellm = import_litellm()
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

        attempts: list[Attempt] = []
        briefs: list[str] = []  # each failed attempt in two or three words, for the status line
        kwargs = self._call_kwargs() | dict(overrides or {})
        stop = stop_after_attempt(self.retries + 1)
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelCallFailed("the time limit was reached before the request could be sent", [])
            kwargs["timeout"] = min(kwargs["timeout"], max(remaining, 0.5))
            stop = stop | stop_after_delay(remaining)
        if tools:
            kwargs["tools"] = tools
            if _has_mcp_bypass():
                kwargs["_skip_mcp_handler"] = True

        def attempt_once():
            if attempts and self.on_retry is not None:
                self.on_retry(len(attempts), briefs[-1])
            started = time.monotonic()
            if deadline is not None and started >= deadline:
                raise DeadlinePassed("the time limit was reached before the request could be sent")
            try:
                response = litellm.completion(model=self.name, messages=messages, **kwargs)
            except Exception as exc:
                attempts.append(Attempt(round(time.monotonic() - started, 3), _one_line(exc),
                                        getattr(exc, "status_code", None)))
                briefs.append(brief(exc))
                raise
            attempts.append(Attempt(round(time.monotonic() - started, 3)))
            return response

        refused = 0

        def worth_retrying(exc: BaseException) -> bool:
            nonlocal refused
            if isinstance(exc, DeadlinePassed):
                return False
            if is_loopback(self.api_base) and connection_failure(exc) == "refused":
                refused += 1
                return refused <= LOOPBACK_REFUSED_RETRIES
            return is_transient(exc) and not not_json(exc)

        retrying = Retrying(
            stop=stop,
            wait=wait_exponential(multiplier=self.retry_min_wait, min=self.retry_min_wait, max=self.retry_max_wait),
            retry=retry_if_exception(worth_retrying),
            reraise=True,
        )
        try:
            response = retrying(attempt_once)
        except DeadlinePassed as exc:
            raise ModelCallFailed(str(exc), attempts) from None
        except Exception as exc:
            tried = f" ({len(attempts)} attempts)" if len(attempts) > 1 else ""
            raise ModelCallFailed(describe_failure(exc, self.name, self.api_base, litellm) + tried,
                                  attempts) from None
        return self._to_reply(litellm, response, attempts)

    def _to_reply(self, litellm, response, attempts: list[Attempt]) -> ModelReply:
        choice = response.choices[0]
        message = choice.message
        calls = [
            ToolCall(id=c.id or f"call_{i}", name=c.function.name or "", arguments=c.function.arguments or "{}")
            for i, c in enumerate(getattr(message, "tool_calls", None) or [])
        ]
        usage = getattr(response, "usage", None)
        reply = ModelReply(
            content=message.content or "",
            tool_calls=calls,
            finish_reason=choice.finish_reason,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            latency_s=round(sum(a.latency_s for a in attempts), 3),
            attempts=attempts,
            logprobs=_plain(getattr(choice, "logprobs", None)),
        )
        try:
            reply.cost_usd = float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:
            reply.cost_usd = 0.0
            reply.cost_note = f"no price known for {self.name}; counted as $0"
        return reply


@functools.cache
def _has_mcp_bypass() -> bool:
    """Recent litellm routes every call with `tools` through its MCP handler, which imports the
    optional `mcp` package; our tools are plain functions, so skip it where litellm allows: the
    versions that have that handler (litellm.responses.mcp) are the ones that accept the switch."""
    import importlib.util

    try:
        return importlib.util.find_spec("litellm.responses.mcp.chat_completions_handler") is not None
    except (ImportError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """Provider objects -> JSON-able data (logprobs arrive as pydantic models)."""
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value if isinstance(value, (dict, list, str, int, float)) else str(value)
