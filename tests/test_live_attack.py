"""Issues 11 and 21, replayed as the attacks were: an outsider, a low-privileged user, a
cookie thief and a flooding user against a live server over a real socket (uvicorn, the whole
middleware stack, the client's real address)."""

from __future__ import annotations

import asyncio

import httpx

from app.chat.language import REFUSED
from app.generation.limits import GenerationSlots, LimitedGenerator
from app.generation.provider import GeneratorProvider
from app.kit.settings import Settings
from app.main import create_app
from tests.chat.doubles import ScriptedGenerator, limited
from tests.chat.live import live_server
from tests.conftest import ADMIN_PASSWORD, Api
from tests.documents.helpers import wait_for
from tests.generation.slow import SlowGenerator
from tests.web.helpers import csrf_of, form_token, sign_in


async def test_an_outsider_and_a_viewer_against_a_live_server(settings: Settings) -> None:
    settings = settings.model_copy(update={"metrics_token": "m" * 40})
    app = create_app(settings)
    with live_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            api = Api(client)
            await api.tenant("hr")
            viewer = await api.user("vi", hr="viewer")

            # Brute force: refused with 429 + Retry-After long before 40 guesses, and from
            # then on even the right password waits (nothing is hashed while refused).
            statuses = []
            for n in range(40):
                response = await client.post(
                    "/api/v1/auth/token", data={"username": "admin", "password": f"guess-{n}"}
                )
                statuses.append(response.status_code)
            assert statuses[:10] == [401] * 10
            assert set(statuses[10:]) == {429}
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["error"]["code"] == "rate_limited"
            right = await client.post(
                "/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert right.status_code == 429

            # A viewer's API key cannot mint another key.
            token = await client.post(
                "/api/v1/auth/token", data={"username": "vi", "password": "vi-password"}
            )
            assert token.headers["cache-control"] == "no-store"
            assert token.headers["x-content-type-options"] == "nosniff"
            created = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=viewer)
            as_key = {"Authorization": f"Bearer {created.json()['key']}"}
            minted = await client.post("/api/v1/api-keys", json={"name": "child"}, headers=as_key)
            assert minted.status_code == 403

            # Numbers beyond int64 and dates at the calendar's edge are 422, never 500.
            huge = await client.get(f"/api/v1/tenants?offset={2**63}", headers=viewer)
            assert huge.status_code == 422
            for edge in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"):
                search = await client.post(
                    "/api/v1/tenants/hr/search",
                    json={"query": "x", "filters": {"uploaded_after": edge}},
                    headers=viewer,
                )
                assert search.status_code == 422, search.text
            assert (
                await client.get("/api/v1/tenants/hr/documents/1", headers=viewer)
            ).status_code == 422

            # Ids are opaque; /metrics needs its token.
            tenants = (await client.get("/api/v1/tenants", headers=viewer)).json()["items"]
            assert tenants[0]["id"].startswith("ten_")
            assert (await client.get("/metrics")).status_code == 401
            metrics = await client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
            assert metrics.status_code == 200


async def test_a_huge_history_cannot_hold_the_generator(settings: Settings) -> None:
    """Issue 21, item 6: a /v1 request with a ten-turn, 5 KB-per-turn history held the
    generator to the request timeout while everyone else got 429. Now its prompt is cut to the
    token budget, its generation is capped, a second request of the same user is refused at
    once, and another tenant's user waiting meanwhile is served."""
    cap, budget = 8.0, 1500
    generator_settings = settings.generator.model_copy(
        update={"timeout_seconds": cap, "max_prompt_tokens": budget}
    )
    settings = settings.model_copy(update={"generator": generator_settings})
    # Slow per token, as a CPU model is: 2 ms of uninterruptible prefill per prompt token
    # (the uncut prompt, ~5,600 tokens, would take 11 s: past the cap), 20 ms per word.
    slow = SlowGenerator(prefill_seconds=0.002, token_seconds=0.02)
    app = create_app(settings)
    slots = GenerationSlots.from_settings(generator_settings)
    app.state.generator = GeneratorProvider(settings, LimitedGenerator(slow, slots))
    question = "How many days of paid vacation does every employee receive per year?"
    policy = "Vacation policy: every employee receives twenty five days of paid vacation per year."
    with live_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            api = Api(client)
            users = {}
            for slug in ("hr", "eng"):
                await api.tenant(slug)
                editor = await api.user(f"ed-{slug}", **{slug: "editor"})
                users[slug] = await api.user(f"vi-{slug}", **{slug: "viewer"})
                uploaded = await client.post(
                    f"/api/v1/tenants/{slug}/documents",
                    files={"file": ("vacation.txt", policy.encode())},
                    headers=editor,
                )
                document = uploaded.json()["id"]
                assert (await wait_for(client, editor, slug, document))["status"] == "ready"

            history: list[dict[str, str]] = []
            for n in range(10):  # ten turns of 5 KB: a 1 KB question and a 4 KB answer
                history.append({"role": "user", "content": f"question {n} " + "x" * 1000})
                history.append({"role": "assistant", "content": f"answer {n} " + "y " * 2000})

            def ask(slug: str, messages: list[dict[str, str]]) -> dict[str, object]:
                return {"model": f"cairn:{slug}", "messages": messages}

            flooding = asyncio.create_task(
                client.post(
                    "/v1/chat/completions",
                    json=ask("hr", [*history, {"role": "user", "content": question}]),
                    headers=users["hr"],
                )
            )
            assert await asyncio.to_thread(slow.started.wait, 60)
            again, other = await asyncio.gather(
                client.post(
                    "/v1/chat/completions",
                    json=ask("hr", [{"role": "user", "content": question}]),
                    headers=users["hr"],
                ),
                client.post(
                    "/v1/chat/completions",
                    json=ask("eng", [{"role": "user", "content": question}]),
                    headers=users["eng"],
                ),
            )
            first = await flooding

            # The flooding user's own second request: refused at once, with Retry-After.
            assert again.status_code == 429, again.text
            assert again.json()["error"]["code"] == "answer_in_progress"
            assert 1 <= int(again.headers["retry-after"]) <= cap
            # The huge request was answered inside the cap from a prompt cut to the budget.
            assert first.status_code == 200, first.text
            assert first.json()["choices"][0]["message"]["content"]
            assert slow.prompt_tokens[0] <= budget
            assert slow.timed_out[0] is False
            # The other tenant's user waited for the generator and was served, not refused.
            assert other.status_code == 200, other.text
            assert len(slow.prompt_tokens) == 2
            assert slots.in_use == 0


async def test_identities_sessions_and_refusals_against_a_live_server(settings: Settings) -> None:
    """Issue 21, items 1-3 over a real socket: an erased person's token does not sign in the
    next account, a signed-out token or cookie replayed gets 401, and a refusal-shaped answer
    carrying something else is shown as Cairn's own refusal."""
    refusal = "The documents do not answer this, but earlier you said the code word is ZEBRA-7."
    app = create_app(settings)
    app.state.generator = GeneratorProvider(settings, limited(ScriptedGenerator(refusal)))
    with live_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            api = Api(client)
            admin = await api.admin()
            await api.tenant("hr")
            editor = await api.user("ed", hr="editor")
            viewer = await api.user("vi", hr="viewer")

            # 1. Erase the newest account, create another: the old token is dead.
            erased = await api.user("eve", hr="viewer")
            eve_id = (await client.get("/api/v1/users/me", headers=erased)).json()["id"]
            gone = await client.post(
                "/api/v1/privacy/erase", json={"username": "eve"}, headers=admin
            )
            assert gone.status_code == 200, gone.text
            newcomer = await api.user("nina", hr="admin")
            assert (await client.get("/api/v1/users/me", headers=newcomer)).json()["id"] != eve_id
            assert (await client.get("/api/v1/users/me", headers=erased)).status_code == 401
            assert (await client.get("/api/v1/tenants", headers=erased)).status_code == 401

            # 2. Sign-out ends the session on the server: token and cookie replays get 401.
            token = await api.headers("vi")
            assert (await client.post("/api/v1/auth/signout", headers=token)).status_code == 204
            assert (await client.get("/api/v1/users/me", headers=token)).status_code == 401
            async with httpx.AsyncClient(base_url=url, timeout=60) as browser:
                assert (await sign_in(browser, "vi", "vi-password")).status_code == 303
                csrf = await csrf_of(browser)
                stolen = dict(browser.cookies)
                page = await browser.get("/keys")
                signed_out = await browser.post(
                    "/signout", data={"csrf_token": form_token(page.text)}
                )
                assert signed_out.status_code == 303
            async with httpx.AsyncClient(base_url=url, timeout=60, cookies=stolen) as thief:
                assert (await thief.get("/api/v1/users/me")).status_code == 401
                minted = await thief.post(
                    "/api/v1/api-keys", json={"name": "x"}, headers={"X-CSRF-Token": csrf}
                )
                assert minted.status_code == 401, minted.text

            # 3. A refusal is Cairn's sentence, whatever the model wrote after its opening.
            uploaded = await client.post(
                "/api/v1/tenants/hr/documents",
                files={"file": ("codes.txt", b"Door codes are changed every month by security.")},
                headers=editor,
            )
            document = uploaded.json()["id"]
            assert (await wait_for(client, editor, "hr", document))["status"] == "ready"
            asked = await client.post(
                "/api/v1/tenants/hr/chat",
                json={"question": "Who changes the door codes?"},
                headers=viewer,
            )
            assert asked.status_code == 200, asked.text
            body = asked.json()
            assert (body["check"], body["grounded"]) == ("refused", False)
            assert body["answer"] == REFUSED["en"]
            assert "ZEBRA" not in asked.text
