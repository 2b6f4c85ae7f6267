"""The dashboard's API on the tiny Gemma with a planted bundle: readings, pins, regenerate,
export, bad input, a busy model and a client that leaves mid-reply."""

from __future__ import annotations

import json
import threading

import pytest

from probes.dashboard.engine import ChatEngine
from probes.dashboard.server import create_app
from probes.dashboard.session import MAX_MESSAGE_TOKENS, Session, SteerSettings
from probes.errors import ProbesError
from tests.unit.dashboard.conftest import PLANTED, READ_LAYER, planted_bundle

TURN1 = "I love the colour of autumn leaves."
TURN2 = "My favourite football team is"


@pytest.fixture
def client(tiny_gemma, planted):
    from fastapi.testclient import TestClient

    engine = ChatEngine(tiny_gemma, planted, max_new_tokens=6)
    session = Session(engine, SteerSettings(layers=(READ_LAYER,), strength=1.0))
    with TestClient(create_app(session)) as test_client:
        test_client.session = session  # type: ignore[attr-defined]
        yield test_client


def _reply(client, path="/api/reply") -> list[dict]:
    response = client.post(path)
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert "error" not in lines[-1], lines[-1]
    return lines


def _chat(client, text):
    response = client.post("/api/message", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json(), _reply(client)


def test_readings_are_probabilities_that_sum_to_one(client):
    turn, lines = _chat(client, TURN1)
    for name, classes in PLANTED.items():
        for kind in ("reading", "control"):
            probs = turn["readings"][name][kind]
            assert len(probs) == len(classes)
            assert all(0.0 <= p <= 1.0 for p in probs)
            assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    done = lines[-1]
    assert done["done"] and done["role"] == "assistant"
    streamed = "".join(line["token"] for line in lines if "token" in line)
    assert streamed == done["replies"]["unsteered"]["text"]
    after = done["replies"]["unsteered"]["readings"]["age"]["reading"]
    assert sum(after) == pytest.approx(1.0, abs=1e-5)
    state = client.get("/api/session").json()
    assert [t["role"] for t in state["turns"]] == ["user", "assistant"]
    assert state["tokens"] and all(set(t["probs"]) == set(PLANTED) for t in state["tokens"])


def test_pinning_a_class_moves_its_reading_up_on_the_next_turn(tiny_gemma, planted):
    def second_turn(pin: str | None) -> list[float]:
        session = Session(
            ChatEngine(tiny_gemma, planted, max_new_tokens=4), SteerSettings((READ_LAYER,), 1.0)
        )
        session.user_message(TURN1)
        session.reply()
        if pin:
            session.set_pin("dialect", pin)
        return session.user_message(TURN2)["readings"]["dialect"]["reading"]

    plain, to_us, to_uk = second_turn(None), second_turn("us"), second_turn("uk")
    assert to_us[1] > plain[1] + 0.05  # "us" is the second class
    assert to_uk[0] > plain[0] + 0.05


def test_regenerate_under_steering_differs_from_unsteered(client):
    _chat(client, TURN1)
    pin = {"attribute": "dialect", "class": "us", "strength": 1.5, "layers": [0, 1, 2, 3]}
    pinned = client.post("/api/pin", json=pin)
    assert pinned.status_code == 200 and pinned.json()["pins"]["dialect"]["class"] == "us"
    done = _reply(client, "/api/regenerate")[-1]
    replies = done["replies"]
    assert set(replies) == {"steered", "unsteered"} and done["regenerated"]
    assert replies["steered"]["text"] != replies["unsteered"]["text"]
    state = client.get("/api/session").json()
    assert [t["role"] for t in state["turns"]] == ["user", "assistant"]  # replaced, not added
    assert state["turns"][-1]["text"] == replies["steered"]["text"].strip()
    exported = client.get("/api/export").json()
    assert exported["interventions"][-1]["class"] == "us"
    assert exported["interventions"][-1]["scope"] == "generation"
    assert exported["turns"][-1]["pins"][0]["strength"] == 1.5


def test_bad_input_gets_one_clear_line_and_the_server_keeps_serving(client):
    for body, words in (
        ({"text": "   "}, "empty"),
        ({"text": "x " * (MAX_MESSAGE_TOKENS + 50)}, "limit"),
        ({"nothing": 1}, "empty"),
    ):
        response = client.post("/api/message", json=body)
        assert response.status_code == 400 and words in response.json()["error"]
    bad_pin = client.post("/api/pin", json={"attribute": "dialect", "class": "martian"})
    assert bad_pin.status_code == 400 and "uk, us" in bad_pin.json()["error"]
    no_turn = client.post("/api/reply")
    assert "send a message first" in no_turn.text
    turn, _ = _chat(client, TURN1)  # still serving
    assert turn["turn"] == 0


def test_a_second_request_while_busy_is_refused_not_interleaved(client):
    session = client.session
    session.lock.acquire()  # another tab is generating
    try:
        response = client.post("/api/message", json={"text": TURN1})
        assert response.status_code == 409 and "busy" in response.json()["error"]
        assert client.get("/api/session").json()["busy"] is True  # a new tab still loads
    finally:
        session.lock.release()
    assert client.post("/api/message", json={"text": TURN1}).status_code == 200


def test_a_client_that_leaves_mid_reply_loses_nothing(tiny_gemma, planted):
    from probes.dashboard.server import _stream

    session = Session(
        ChatEngine(tiny_gemma, planted, max_new_tokens=8), SteerSettings((READ_LAYER,), 1.0)
    )
    session.user_message(TURN1)
    lines = _stream(session, regenerate=False)
    first = json.loads(next(lines))
    assert "token" in first
    lines.close()  # the browser went away after one token
    for _ in range(200):  # the reply thread finishes and commits on its own
        if not session.lock.locked() and len(session.turns) == 2:
            break
        threading.Event().wait(0.05)
    exported = session.export()
    assert [t["role"] for t in exported["turns"]] == ["user", "assistant"]
    assert exported["turns"][1]["replies"]["unsteered"]["text"].startswith(first["token"])


def test_a_bundle_for_other_weights_is_refused_naming_both(tiny_gemma):
    with pytest.raises(ProbesError, match="fingerprint 0000") as info:
        ChatEngine(tiny_gemma, planted_bundle(tiny_gemma, fingerprint="0000"))
    assert tiny_gemma.fingerprint in str(info.value)
