"""The OpenAI-compatible captioner against a local chat-completions server started by the test."""

import base64
import json
import time

import pytest

from ego_assets.lib import backends
from ego_assets.lib.captions import CaptionConfigError, CaptionError
from ego_assets.lib.captions.backends import OpenAICaptioner
from ego_assets.lib.captions.checks import check_captions_cover_segments
from ego_assets.lib.captions.openai_compat import (PROMPT_VERSION, SYSTEM_PROMPT, ChatClient, MalformedAnswer,
                                                   parse_answer)
from ego_assets_tests.helpers.fake_vlm import FakeVLM

KEY = "sk-test-SECRET-4242"


@pytest.fixture
def vlm():
    srv = FakeVLM()
    yield srv
    srv.close()


def captioner(vlm, tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("concurrency", 1)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return OpenAICaptioner(base_url=vlm.url, model="test-vlm", api_key=KEY, **kw)


def run(cap, scene, tmp_path):
    return cap.caption(scene.segments, scene.hand_world, scene.tables.frames, scene.proxy, scene.calib,
                       scene.tables.camera_poses, str(tmp_path / "overlays"))


def test_protocol_images_and_answers(vlm, scene, tmp_path):
    progress = []
    cap = captioner(vlm, tmp_path, concurrency=2)
    res = cap.caption(scene.segments, scene.hand_world, scene.tables.frames, scene.proxy, scene.calib,
                      scene.tables.camera_poses, str(tmp_path / "overlays"),
                      progress=lambda d, t: progress.append((d, t)))
    rows = {r["hand"]: r for r in res.captions.to_pylist()}
    assert rows["right"]["instruction"] == "pick up the mug with the right hand"
    assert rows["left"]["instruction"] == "pick up the drawer with the left hand"
    assert rows["right"]["reasoning"] == "The right hand reaches the mug."
    assert json.loads(rows["left"]["details"]) == {"verb": "pick up", "object": "the drawer."}
    for r in rows.values():
        assert r["valid"] and r["captioner"] == "openai" and r["model"] == "test-vlm"
        assert r["prompt_version"] == PROMPT_VERSION
        with open(r["overlay_uri"], "rb") as f:
            assert f.read(2) == b"\xff\xd8"
    assert progress[-1] == (2, 2)
    assert check_captions_cover_segments(scene.segments, res.captions)[0]
    assert len(vlm.requests) == 2
    req = vlm.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "test-vlm"
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    parts = body["messages"][1]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 4  # four overlay frames, inline
    for url in images:
        assert url.startswith("data:image/jpeg;base64,")
        assert base64.b64decode(url.split(",", 1)[1])[:2] == b"\xff\xd8"
    assert res.stats["requests"] == 2 and res.stats["retries"] == 0


def test_cache_hit_on_rerun(vlm, scene, tmp_path):
    first = run(captioner(vlm, tmp_path), scene, tmp_path)
    assert len(vlm.requests) == 2
    second = run(captioner(vlm, tmp_path), scene, tmp_path)
    assert len(vlm.requests) == 2  # the server saw nothing new
    assert second.stats["cache_hits"] == 2 and second.stats["requests"] == 0
    assert first.captions.drop_columns(["overlay_uri"]).equals(second.captions.drop_columns(["overlay_uri"]))
    # another model is another cache entry
    other = OpenAICaptioner(base_url=vlm.url, model="other-vlm", cache_dir=str(tmp_path / "cache"),
                            concurrency=1)
    run(other, scene, tmp_path)
    assert len(vlm.requests) == 4


def test_malformed_answer_gets_a_correction(vlm, scene, tmp_path):
    vlm.script = [("answer", "Sure! The right hand picks up a mug."),
                  ("answer", '```json\n{"reasoning": "It grasps the mug.", "instruction": "grasp the mug '
                             'with the right hand"}\n```')]
    res = run(captioner(vlm, tmp_path), scene, tmp_path)
    msgs = vlm.requests[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "Sure! The right hand picks up a mug."
    assert "JSON" in msgs[3]["content"]
    first_hand = "right" if "right hand" in vlm.requests[0]["body"]["messages"][1]["content"][0]["text"] else "left"
    row = next(r for r in res.captions.to_pylist() if r["hand"] == first_hand)
    assert row["instruction"] == "grasp the mug with the right hand" and row["valid"]
    assert len(vlm.requests) == 3


def test_persistently_malformed_is_na_and_bounded(vlm, scene, tmp_path):
    vlm.script = [("answer", "no idea")] * 3
    res = run(captioner(vlm, tmp_path, max_format_retries=2), scene, tmp_path)
    assert res.stats["malformed"] == 1
    bad = [r for r in res.captions.to_pylist() if not r["valid"]]
    assert len(bad) == 1 and bad[0]["instruction"] == "N/A" and "malformed" in bad[0]["reasoning"]
    assert len(vlm.requests) == 3 + 1  # 3 attempts for the first segment, 1 for the second
    # a malformed result is not cached: the rerun asks again
    run(captioner(vlm, tmp_path), scene, tmp_path)
    assert len(vlm.requests) == 5


def test_na_answer(vlm, scene, tmp_path):
    vlm.script = [("answer", '{"reasoning": "The hand only drifts.", "instruction": "N/A"}'),
                  ("answer", '{"reasoning": "Nothing happens.", "instruction": "n/a."}')]
    res = run(captioner(vlm, tmp_path), scene, tmp_path)
    for r in res.captions.to_pylist():
        assert r["instruction"] == "N/A" and r["valid"] is False
    assert res.stats["na"] == 2


def test_429_honours_retry_after(vlm, scene, tmp_path):
    vlm.script = [("status", 429, {"Retry-After": "1"}, '{"error": "slow down"}')]
    t0 = time.monotonic()
    res = run(captioner(vlm, tmp_path, backoff_s=0.01), scene, tmp_path)
    assert res.stats["throttled"] == 1 and res.stats["retries"] == 1
    assert vlm.requests[1]["t"] - vlm.requests[0]["t"] >= 0.95  # waited as told, not 10 ms
    assert time.monotonic() - t0 >= 0.95
    assert all(res.captions["valid"].to_pylist())


def test_500_backoff_then_success_and_give_up(vlm, scene, tmp_path):
    vlm.script = [("status", 500, {}, "boom"), ("status", 503, {}, "busy")]
    res = run(captioner(vlm, tmp_path, backoff_s=0.05), scene, tmp_path)
    assert res.stats["server_errors"] == 2 and res.stats["retries"] == 2
    gaps = [vlm.requests[i + 1]["t"] - vlm.requests[i]["t"] for i in range(2)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # exponential: 0.05, then 0.1
    assert all(res.captions["valid"].to_pylist())
    # an endpoint that keeps failing: a clear error, bounded attempts, the key never shown
    vlm.script = [("status", 500, {}, f"echo Authorization: Bearer {KEY}")] * 10
    with pytest.raises(CaptionError) as e:
        run(captioner(vlm, tmp_path, max_retries=2, cache_dir=str(tmp_path / "c2")), scene, tmp_path)
    assert "HTTP 500" in str(e.value) and KEY not in str(e.value) and "***" in str(e.value)
    assert "1 segment(s) failed, 1 not tried" in str(e.value)
    assert len(vlm.requests) == 4 + 3  # 4 before; now 3 attempts, then the other segment is not sent
    # 4xx other than 429 is not retried
    vlm.script = [("status", 401, {}, "bad key")]
    with pytest.raises(CaptionError, match="HTTP 401"):
        run(captioner(vlm, tmp_path, cache_dir=str(tmp_path / "c3")), scene, tmp_path)
    assert len(vlm.requests) == 8


def test_timeout_is_retried(vlm, scene, tmp_path):
    vlm.script = [("sleep", 1.5)]
    res = run(captioner(vlm, tmp_path, timeout_s=0.4, backoff_s=0.01), scene, tmp_path)
    assert res.stats["timeouts"] == 1 and res.stats["retries"] == 1
    assert all(res.captions["valid"].to_pylist())


def test_configuration_and_key_hygiene(monkeypatch, scene, tmp_path):
    monkeypatch.delenv("EGO_ASSETS_VLM_BASE_URL", raising=False)
    monkeypatch.delenv("EGO_ASSETS_VLM_MODEL", raising=False)
    cap = OpenAICaptioner()
    with pytest.raises(CaptionConfigError, match="EGO_ASSETS_VLM_BASE_URL"):
        run(cap, scene, tmp_path)
    monkeypatch.setenv("EGO_ASSETS_VLM_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(CaptionConfigError, match="EGO_ASSETS_VLM_MODEL"):
        run(OpenAICaptioner(), scene, tmp_path)
    monkeypatch.setenv("EGO_ASSETS_VLM_MODEL", "qwen-vl")
    monkeypatch.setenv("EGO_ASSETS_VLM_API_KEY", KEY)
    cap = OpenAICaptioner()
    assert KEY not in repr(cap) and KEY not in repr(cap.client())
    assert cap.client().url == "http://127.0.0.1:9/v1/chat/completions"
    # the model is part of the code version: switching it marks captions stale
    assert backends.backend_class("captions", "openai").code_version() == f"openai@1+{PROMPT_VERSION}+qwen-vl"
    # an unreachable endpoint: retried, then a clear error without the key
    with pytest.raises(CaptionError) as e:
        ChatClient("http://127.0.0.1:9/v1", "m", KEY, timeout_s=0.5, max_retries=1, backoff_s=0.01).complete([])
    assert "cannot reach" in str(e.value) and KEY not in str(e.value)


def test_prompt_asks_for_verb_and_object_and_the_instruction_is_composed():
    assert '"verb"' in SYSTEM_PROMPT and '"object"' in SYSTEM_PROMPT and "no positions" in SYSTEM_PROMPT
    a = parse_answer('{"reasoning": "r", "verb": "Open ", "object": "The top  drawer", '
                     '"instruction": "open the top drawer on the left with the left hand"}', "left")
    assert a["instruction"] == "open the top drawer with the left hand" and a["valid"]
    assert json.loads(a["details"]) == {"verb": "open", "object": "the top drawer"}
    # without verb/object (an older answer) the instruction is kept as given
    assert parse_answer('{"reasoning": "r", "instruction": "grasp it"}', "left")["instruction"] == "grasp it"
    na = parse_answer('{"reasoning": "r", "verb": "", "object": "", "instruction": "N/A"}', "right")
    assert na["instruction"] == "N/A" and not na["valid"] and na["details"] is None


@pytest.mark.parametrize("text, expect", [
    ('{"reasoning": "r", "instruction": "open the drawer with the left hand"}',
     ("open the drawer with the left hand", True)),
    ('```json\n{"reasoning": "r", "instruction": "pick up the cup"}\n```', ("pick up the cup", True)),
    ('```\n{"reasoning": "r", "instruction": "N/A"}\n```', ("N/A", False)),
    ('{"reasoning": "r", "instruction": "none"}', ("N/A", False)),
    ('{"reasoning": "r", "instruction": null}', ("N/A", False)),
])
def test_parse_answer_accepts(text, expect):
    a = parse_answer(text)
    assert (a["instruction"], a["valid"]) == expect


@pytest.mark.parametrize("text", [
    "pick up the cup",
    'Here you go: {"reasoning": "r", "instruction": "x"}',
    '{"reasoning": "r"}',
    '["reasoning", "instruction"]',
    '{"reasoning": "r", "instruction": ""}',
    '{"reasoning": 3, "instruction": "x"}',
    "",
])
def test_parse_answer_rejects(text):
    with pytest.raises(MalformedAnswer):
        parse_answer(text)
