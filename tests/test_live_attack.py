"""Issue 11, replayed as the attack was: an outsider and a low-privileged user against a live
server over a real socket (uvicorn, the whole middleware stack, the client's real address)."""

from __future__ import annotations

import httpx

from app.kit.settings import Settings
from app.main import create_app
from tests.chat.live import live_server
from tests.conftest import ADMIN_PASSWORD, Api


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
