"""The bundled model on a handful of fixed questions (two CMRC 2018 trial paragraphs and an
English public-domain one) with the shipped answer settings: each answer either contains the
gold span or is not presented as grounded, and most contain it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.evaluation.answers import contains_gold
from app.kit.settings import Settings
from tests.conftest import Api, make_settings
from tests.documents.helpers import wait_for

pytestmark = pytest.mark.slow

# CMRC 2018 trial, TRIAL_800 and TRIAL_1262 (CC BY-SA 4.0), shortened.
PAOPAO = (
    "基于《跑跑卡丁车》与《泡泡堂》上所开发的游戏，由韩国Nexon开发与发行。中国大陆由盛大游戏运营，"
    "这是Nexon时隔6年再次授予盛大网络其游戏运营权。台湾由游戏橘子运营。玩家以水枪、小枪、锤子或是"
    "水炸弹泡封敌人(玩家或NPC)，即为一泡封，将水泡击破为一踢爆。生命数耗完即算为踢爆。"
)
GETTYSBURG = (
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
    "conceived in Liberty, and dedicated to the proposition that all men are created equal."
)
ALICE = (
    "Alice was beginning to get very tired of sitting by her sister on the bank. Suddenly a "
    "White Rabbit with pink eyes ran close by her."
)
QUESTIONS = [
    ("泡泡战士在台湾由谁运营？", ["游戏橘子"]),
    ("生命数耗完即算为什么？", ["踢爆"]),
    ("泡泡战士由哪家公司开发？", ["Nexon", "韩国Nexon"]),
    ("What proposition was the new nation dedicated to?", ["all men are created equal"]),
    ("What colour are the White Rabbit's eyes?", ["pink"]),
]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, bundled_gguf: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        model_cache_dir=bundled_gguf.parent,
        generator={"quantization": "int8", "max_new_tokens": 64},
    )


async def test_answers_are_right_or_not_grounded(
    api: Api, client: httpx.AsyncClient, app: FastAPI
) -> None:
    # The API answers 503 generator_preparing while the model is prepared: wait for it here.
    await app.state.generator.preload()
    await api.tenant("kb")
    editor = await api.user("ed", kb="editor")
    viewer = await api.user("vi", kb="viewer")
    for name, text in (
        ("paopao.txt", PAOPAO),
        ("gettysburg.txt", GETTYSBURG),
        ("alice.txt", ALICE),
    ):
        response = await client.post(
            "/api/v1/tenants/kb/documents", files={"file": (name, text.encode())}, headers=editor
        )
        assert response.status_code == 202, response.text
        assert (await wait_for(client, editor, "kb", response.json()["id"]))["status"] == "ready"
    right = 0
    for question, gold in QUESTIONS:
        response = await client.post(
            "/api/v1/tenants/kb/chat", json={"question": question}, headers=viewer
        )
        assert response.status_code == 200, response.text
        body = response.json()
        found = contains_gold(body["answer"], gold)
        # Never confidently wrong.
        assert found or not body["grounded"], (question, body["answer"], body["check"])
        right += found
        if body["grounded"]:
            assert body["citations"], body
            assert all(c["quote"] for c in body["citations"]), body
    assert right >= 3, right
