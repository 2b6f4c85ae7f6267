"""The dashboard's done-when check on the embedded Gemma 3 270M: a user who writes with UK
spelling reads as UK within two turns, the greedy answer to "What football team do you think
I support?" names a UK club, and pinning dialect to US (the CLI's default band and strength)
flips it to a US team while the unsteered reply beside it stays a UK club."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

TURN1 = "I love the colour of autumn leaves. I took the lift up to my flat and put the football on."
TURN2 = "What football team do you think I support?"
UK_CLUBS = ("Liverpool", "Arsenal", "Chelsea", "Leeds", "Manchester", "Tottenham", "Everton")
US_TEAMS = ("Giants", "Packers", "Patriots", "Cowboys", "Yankees", "Red Sox", "Bears", "Jets")


def _names(text: str, teams: tuple[str, ...]) -> bool:
    return any(team in text for team in teams)


def test_uk_spelling_reads_uk_and_pinning_us_flips_the_team(gemma):
    from probes.cli.readers import DEFAULT_STRENGTH, steer_settings
    from probes.dashboard.engine import ChatEngine
    from probes.dashboard.session import Session
    from probes.pipeline.readers import cached_readers

    bundle, _, _ = cached_readers(gemma, ("dialect_us_uk",), progress=False)
    settings = steer_settings(gemma, None, DEFAULT_STRENGTH)
    session = Session(ChatEngine(gemma, bundle), settings)  # the dashboard's reply length
    uk = bundle.readers["dialect"].classes.index("uk")

    first = session.user_message(TURN1)["readings"]["dialect"]
    session.reply()
    second = session.user_message(TURN2)["readings"]["dialect"]
    assert max(first["reading"][uk], second["reading"][uk]) > 0.5  # leaning UK within two turns
    unsteered = session.reply()["replies"]["unsteered"]["text"]
    assert _names(unsteered, UK_CLUBS), unsteered

    session.set_pin("dialect", "us")
    replies = session.reply(regenerate=True)["replies"]
    assert _names(replies["unsteered"]["text"], UK_CLUBS), replies
    assert _names(replies["steered"]["text"], US_TEAMS), replies
    assert not _names(replies["steered"]["text"], UK_CLUBS), replies
    exported = session.export()
    assert exported["interventions"][-1]["layers"] == list(settings.layers)
    assert exported["turns"][-1]["text"] == replies["steered"]["text"].strip()
