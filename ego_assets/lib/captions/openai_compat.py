"""Captions from any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs).

httpx talks HTTP and tenacity retries (the protocol we use is one POST, so no SDK to pin). What a
production caller needs and is here:

- settings from the environment: ``EGO_ASSETS_VLM_BASE_URL`` (e.g. ``http://gpu-box:8000/v1``),
  ``EGO_ASSETS_VLM_MODEL``, ``EGO_ASSETS_VLM_API_KEY`` (optional; sent as a bearer token, never logged,
  never in an error message or a repr);
- images inline as base64 ``data:`` URLs (the endpoint needs no access to our storage);
- strict answers: one JSON object ``{"reasoning": ..., "instruction": ...}`` (a Markdown code fence
  around it is tolerated); anything else gets a corrective follow-up message, a bounded number of times;
  ``N/A`` is recognised as "no meaningful action";
- transport robustness: per-request timeout; retries with exponential backoff (and jitter) on 429, 5xx,
  timeouts and connection errors, honouring ``Retry-After``; other 4xx fail at once (retrying a bad
  request or a wrong key only costs money);
- a cache keyed by (segment content hash, prompt version, model), one JSON file per answer, so a rerun
  (or a retry of a failed run) pays only for what it has not got yet.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass

import httpx
import tenacity

from ego_assets.lib import settings
from ego_assets.lib.captions.base import NA, CaptionConfigError, CaptionError, SegmentView

log = logging.getLogger(__name__)

PROMPT_VERSION = "egohoi-v2"  # v2: verb + object, instruction composed from them
ENV_BASE_URL = settings.var("VLM_BASE_URL")
ENV_MODEL = settings.var("VLM_MODEL")
ENV_API_KEY = settings.var("VLM_API_KEY")

SYSTEM_PROMPT = """\
You annotate egocentric (first-person) video of a person's hands interacting with objects; the \
annotations teach robots manipulation skills.
You get a few frames of one short segment, in time order, numbered 1, 2, 3... in the top-left corner. \
A coloured line shows where the person's wrist moves from that frame to the end of the segment (blue/purple \
= now, through green and yellow, to red = end of the segment); a circle marks the wrist now. The top-right \
corner says which hand the segment is about (the person's own left or right hand).
Name the one action that hand performs in the segment with a verb and the object it acts on, so that the same action on the same kind of object gets the same words in every video:
- "verb": one of: pick up, place, put down, push, pull, open, close, pour, turn, press, lift, hold, wipe, cut, stir, insert, remove, hand over; another short verb only when none of these fits;
- "object": the object as a short noun phrase (one to three words, e.g. "mug", "top drawer", "water bottle"), with an attribute only when it is needed to tell two objects in view apart; no positions, distances or numbers.
The instruction is then "<verb> the <object> with the <left or right> hand", for example "pick up the mug with the right hand", "open the top drawer with the left hand".
If that hand does nothing meaningful in the segment (no object is touched, moved or manipulated; the hand only drifts or is out of view), verb and object are "" and the instruction is "N/A".
Answer with one JSON object and nothing else:
{"reasoning": "<one or two short sentences: what the hand does and to which object>", "verb": "<verb>", "object": "<object>", "instruction": "<the instruction, or N/A>"}"""

CORRECTION = ("Your answer could not be used ({problem}). Reply with only one JSON object of the form "
              '{{"reasoning": "...", "instruction": "..."}} and no other text.')

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.S)
_NA = re.compile(r"^(n\s*/\s*a|n\.a\.|na|none|no action|no meaningful action)\.?$", re.I)


class MalformedAnswer(ValueError):
    """The model's answer is not the JSON object the prompt asks for."""


_ARTICLE = re.compile(r"^(the|a|an)\s+", re.I)


def compose_instruction(verb: str, obj: str, hand: str) -> str:
    """The canonical instruction: lower case, one article, the hand last."""
    verb = " ".join(verb.lower().split())
    obj = _ARTICLE.sub("", " ".join(obj.lower().strip(" .").split()))
    return f"{verb} the {obj} with the {hand} hand"


def parse_answer(text: str, hand: str | None = None) -> dict:
    """``{"instruction", "reasoning", "valid", "details"}`` from a model answer, or :class:`MalformedAnswer`.
    With ``verb`` and ``object`` in the answer (and ``hand`` given) the instruction is composed from them
    (``compose_instruction``), so the same action gets the same task string; ``details`` keeps them."""
    if not isinstance(text, str) or not text.strip():
        raise MalformedAnswer("empty answer")
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1).strip()
    try:
        obj = json.loads(s)
    except ValueError:
        raise MalformedAnswer("not a JSON object") from None
    if not isinstance(obj, dict):
        raise MalformedAnswer(f"JSON {type(obj).__name__}, not an object")
    for k in ("reasoning", "instruction"):
        if k not in obj:
            raise MalformedAnswer(f"missing key {k!r}")
    instr, reasoning = obj["instruction"], obj["reasoning"]
    if instr is None:
        instr = NA
    if not isinstance(instr, str) or not isinstance(reasoning, str):
        raise MalformedAnswer("'instruction' and 'reasoning' must be strings")
    instr = " ".join(instr.split())
    if not instr:
        raise MalformedAnswer("empty instruction (use N/A when nothing happens)")
    na = bool(_NA.match(instr))
    verb, noun = obj.get("verb"), obj.get("object")
    named = isinstance(verb, str) and isinstance(noun, str) and verb.strip() and noun.strip()
    details = json.dumps({"verb": " ".join(verb.lower().split()), "object": " ".join(noun.lower().split())}) \
        if named and not na else None
    if named and not na and hand:
        instr = compose_instruction(verb, noun, hand)
    return dict(instruction=NA if na else instr, reasoning=" ".join(reasoning.split()), valid=not na,
                details=details)


def user_text(view: SegmentView, n_images: int) -> str:
    return (f"Segment of the person's {view.hand} hand, {view.duration_s:.1f} s long; its wrist travels "
            f"{view.path_length_m * 100:.0f} cm (measured from 3D tracking). Frames 1-{n_images} below are "
            f"in time order. What does the {view.hand} hand do?")


def content_hash(hand: str, text: str, images: list[bytes]) -> str:
    """What the model is shown: the prompts and the exact image bytes."""
    h = hashlib.sha256()
    for part in (SYSTEM_PROMPT, hand, text):
        h.update(part.encode())
        h.update(b"\0")
    for img in images:
        h.update(hashlib.sha256(img).digest())
    return h.hexdigest()


def cache_key(content: str, prompt_version: str, model: str) -> str:
    return hashlib.sha256(f"{content}|{prompt_version}|{model}".encode()).hexdigest()


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def messages_for(text: str, images: list[bytes]) -> list[dict]:
    content = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": data_url(b)}} for b in images]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    timeouts: int = 0


class ChatClient:
    """A minimal chat-completions client: POST ``{base_url}/chat/completions``, return the text."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0,
                 max_retries: int = 4, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 max_retry_after_s: float = 300.0, temperature: float = 0.0, max_tokens: int = 300):
        if not base_url:
            raise CaptionConfigError(f"no VLM endpoint: set {ENV_BASE_URL} (e.g. http://host:8000/v1)")
        if not model:
            raise CaptionConfigError(f"no VLM model: set {ENV_MODEL}")
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CaptionConfigError(f"{ENV_BASE_URL} must be an http(s) URL, got {base_url!r}")
        self.model = model
        self._key = api_key or None
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stats = ClientStats()
        self._lock = threading.Lock()
        # a local endpoint never goes through an environment proxy (trust_env=False); one client per
        # ChatClient, shared by the captioner's threads (httpx.Client is thread-safe), keeps connections
        local = parsed.hostname in ("127.0.0.1", "localhost", "::1")
        self._http = httpx.Client(timeout=timeout_s, trust_env=not local)
        # exponential backoff from backoff_s, capped at max_backoff_s, plus up to a quarter of backoff_s
        # of jitter; a Retry-After header wins (capped at max_retry_after_s)
        self._backoff = (tenacity.wait_exponential(multiplier=backoff_s, max=max_backoff_s)
                         + tenacity.wait_random(0, 0.25 * backoff_s))

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never the key
        return f"ChatClient(url={self.url!r}, model={self.model!r}, api_key={'set' if self._key else 'unset'})"

    def _redact(self, msg: str) -> str:
        return msg.replace(self._key, "***") if self._key else msg

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._count(requests=1)
        try:
            resp = self._http.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            self._count(timeouts=1)
            raise _Retryable(f"timeout after {self.timeout_s} s from {self.url}") from None
        except httpx.ConnectError as e:
            raise _Retryable(self._redact(f"cannot reach {self.url}: {e}")) from None
        except httpx.TransportError as e:
            raise _Retryable(self._redact(f"connection to {self.url} failed: {type(e).__name__}: {e}")) from None
        if resp.status_code >= 400:
            msg = self._redact(f"HTTP {resp.status_code} from {self.url}: {resp.text[:300].strip()[:200]}")
            if resp.status_code == 429:
                self._count(throttled=1)
                raise _Retryable(msg, _retry_after_s(resp.headers.get("Retry-After")))
            if resp.status_code >= 500:
                self._count(server_errors=1)
                raise _Retryable(msg, _retry_after_s(resp.headers.get("Retry-After")))
            raise CaptionError(msg)
        raw = resp.content
        try:
            payload = json.loads(raw)
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(f"{self.url} answered with no chat completion: {raw[:200]!r}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""

    def _wait(self, state: tenacity.RetryCallState) -> float:
        after = getattr(state.outcome.exception(), "retry_after", None)
        return min(after, self.max_retry_after_s) if after is not None else self._backoff(state)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        self._count(retries=1)
        log.info("VLM request failed (%s); retry %d/%d in %.2f s", state.outcome.exception(),
                 state.attempt_number, self.max_retries, state.next_action.sleep)

    def complete(self, messages: list[dict]) -> str:
        """The assistant's text for ``messages``, retrying transient failures (429, 5xx, timeouts,
        connection errors); :class:`CaptionError` when the endpoint refuses or the retries are spent."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.max_retries + 1), wait=self._wait,
                                     retry=tenacity.retry_if_exception_type(_Retryable),
                                     before_sleep=self._before_sleep, reraise=True)
        try:
            return retrying(self._post, body)
        except _Retryable as e:
            raise CaptionError(f"VLM endpoint gave up after {self.max_retries + 1} attempt(s): {e}") from None


def ask(client: ChatClient, text: str, images: list[bytes], max_format_retries: int = 2,
        hand: str | None = None) -> tuple[dict, int]:
    """Ask for one segment's caption; returns (parsed answer, number of malformed answers before it).
    Raises :class:`MalformedAnswer` when every answer was malformed."""
    messages = messages_for(text, images)
    problem = None
    for k in range(max_format_retries + 1):
        answer = client.complete(messages)
        try:
            return parse_answer(answer, hand), k
        except MalformedAnswer as e:
            problem = str(e)
            messages = messages + [{"role": "assistant", "content": answer},
                                   {"role": "user", "content": CORRECTION.format(problem=problem)}]
    raise MalformedAnswer(f"{max_format_retries + 1} malformed answer(s), last: {problem}")
