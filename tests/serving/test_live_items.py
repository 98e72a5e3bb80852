"""POST /items and DELETE /items/{id}: items placed by the run's cold-start model at once, stored
durably, hidden everywhere on delete; a real server (uvicorn) over a run fitted by ``modalrec fit``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_helpers import fit_run, query_encoder
from serving_helpers import KEYS, LiveServer, serve_config

from modalrec.encoders.registry import build_encoder
from modalrec.serving.app import create_app
from modalrec.workflows.rundir import load_run

W = {"Authorization": f"Bearer {KEYS['writer']}"}
RED = {"item_id": "n-red", "fields": {"title": "red velvet sofa chair", "colour": "red"}}
BLUE = {"item_id": "n-blue", "fields": {"title": "blue steel lamp bulb", "colour": "blue"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("live-items")
    return {"coldstart": fit_run(d, "coldstart"), "itemknn": fit_run(d, "itemknn")}


def _server(run: Path, tmp: Path, **over: Any) -> LiveServer:
    return LiveServer(
        create_app(run, serve_config(tmp, text_encoder="none", **over), encode_text=query_encoder())
    )


def _stored_rows(tmp: Path) -> int:
    with sqlite3.connect(tmp / "state" / "live_items.sqlite") as con:
        return int(con.execute("SELECT count(*) FROM live_items").fetchone()[0])


def _ids(answer: dict[str, Any]) -> list[str]:
    return [it["item_id"] for it in answer["items"]]


def test_an_added_item_is_recommended_similar_and_searchable_at_once_and_after_a_restart(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    with _server(runs["coldstart"], tmp_path) as srv:
        c = srv.client
        for body in (RED, BLUE):
            r = c.post("/items", json=body, headers=W)
            assert r.status_code == 201, r.text
            assert r.json()["created"] is True and r.json()["modalities"] == ["text"]
        detail = c.get("/items/n-red").json()
        assert detail["live"] is True and detail["fields"]["colour"] == "red" and detail["popularity"] == 0
        # placed by its content: users of the red cluster (u0, u3, ...) rank n-red above n-blue,
        # users of the blue cluster the other way round
        ranks = {}
        for u in ("u0", "u3", "u1", "u4"):
            ids = _ids(c.get(f"/recommend/{u}", params={"k": 62}).json())
            ranks[u] = ids.index("n-red") < ids.index("n-blue")
        assert ranks == {"u0": True, "u3": True, "u1": False, "u4": False}
        sim = _ids(c.get("/similar/n-red", params={"k": 5}).json())
        assert all(int(i[1:]) % 3 == 0 for i in sim if i.startswith("i")), sim  # red-cluster items
        assert "n-red" in _ids(c.get("/similar/i0", params={"k": 60}).json())
        assert _ids(c.get("/search", params={"q": "blue steel lamp bulb", "k": 3}).json())[0] == "n-blue"
        assert c.get("/similar/n-blue", params={"k": 3, "modality": "text"}).status_code == 200
    with _server(runs["coldstart"], tmp_path) as srv:  # a restart applies the stored items again
        c = srv.client
        assert c.get("/items/n-blue").json()["live"] is True
        ids = _ids(c.get("/recommend/u1", params={"k": 62}).json())
        assert ids.index("n-blue") < ids.index("n-red")
        assert _ids(c.get("/search", params={"q": "blue steel lamp bulb", "k": 1}).json()) == ["n-blue"]


def test_the_same_item_again_is_idempotent_and_other_content_under_its_id_conflicts(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    with _server(runs["coldstart"], tmp_path) as srv:
        c = srv.client
        assert c.post("/items", json=RED, headers=W).status_code == 201
        again = c.post("/items", json=RED, headers=W)
        assert again.status_code == 200 and again.json()["created"] is False
        other = c.post("/items", json={**RED, "fields": {"title": "green oak desk"}}, headers=W)
        assert other.status_code == 409 and other.json()["error"]["code"] == "item_exists"
        catalogue = c.post("/items", json={"item_id": "i3", "fields": {"title": "red sofa"}}, headers=W)
        assert catalogue.status_code == 409 and "already in the run's catalogue" in catalogue.text
        assert _stored_rows(tmp_path) == 1
        assert c.get("/items/n-red").json()["title"] == "red velvet sofa chair"


def test_a_model_that_cannot_place_new_items_answers_409_naming_the_model_to_fit(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    with _server(runs["itemknn"], tmp_path) as srv:
        r = srv.client.post("/items", json=RED, headers=W)
        assert r.status_code == 409
        err = r.json()["error"]
        assert (
            err["code"] == "model_cannot_place"
            and "'itemknn'" in err["message"]
            and "coldstart" in err["message"]
        )
        # deleting still works for any model
        assert srv.client.delete("/items/i5", headers=W).status_code == 200
        assert "i5" not in _ids(
            srv.client.get("/recommend/u2", params={"k": 60, "exclude_seen": False}).json()
        )


def test_delete_hides_an_item_everywhere_and_durably(runs: dict[str, Path], tmp_path: Path) -> None:
    with _server(runs["coldstart"], tmp_path) as srv:
        c = srv.client
        assert c.post("/items", json=BLUE, headers=W).status_code == 201
        for item in ("n-blue", "i1"):  # a live item and a catalogue item
            r = c.delete(f"/items/{item}", headers=W)
            assert r.status_code == 200 and r.json() == {"item_id": item, "deleted": True}

        def hidden_everywhere(c: Any) -> None:
            for item in ("n-blue", "i1"):
                assert c.get(f"/items/{item}").status_code == 404
                assert c.get(f"/similar/{item}").status_code == 404
                assert c.delete(f"/items/{item}", headers=W).status_code == 404
            for u in ("u1", "u4", "u7"):
                ids = _ids(c.get(f"/recommend/{u}", params={"k": 61, "exclude_seen": False}).json())
                assert "n-blue" not in ids and "i1" not in ids and len(ids) == 59  # 60 + 1 - 2
            assert "i1" not in _ids(c.get("/similar/i4", params={"k": 59}).json())
            assert "i1" not in _ids(c.get("/similar/i4", params={"k": 59, "modality": "text"}).json())
            found = _ids(c.get("/search", params={"q": "blue steel lamp bulb", "k": 60}).json())
            assert "n-blue" not in found and "i1" not in found

        hidden_everywhere(c)
        unknown = c.delete("/items/nope", headers=W)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_item"
    with _server(runs["coldstart"], tmp_path) as srv:
        hidden_everywhere(srv.client)
        # a deleted id may be added again (a new item under the old id)
        assert srv.client.post("/items", json=BLUE, headers=W).status_code == 201
        assert srv.client.get("/items/n-blue").status_code == 200


def test_adding_and_deleting_need_the_write_scope(runs: dict[str, Path], tmp_path: Path) -> None:
    with _server(runs["coldstart"], tmp_path) as srv:
        c = srv.client
        reader = {"Authorization": f"Bearer {KEYS['reader']}"}
        assert c.post("/items", json=RED).status_code == 401
        assert c.post("/items", json=RED, headers=reader).status_code == 403
        assert c.delete("/items/i1").status_code == 401
        assert c.delete("/items/i1", headers=reader).status_code == 403
        assert c.get("/items/i1").status_code == 200 and c.get("/items/n-red").status_code == 404
        assert _stored_rows(tmp_path) == 0


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ({"item_id": "n1", "fields": {"price": "3"}}, 422, "unknown_field", "['price']"),
        ({"item_id": "n1", "fields": {"title": "   "}}, 422, "no_content", "text: empty text"),
        ({"item_id": "n1"}, 422, "no_content", "no content for any modality"),
        ({"item_id": "a/b", "fields": {"title": "x"}}, 422, "invalid_request", "item_id"),
        ({"item_id": "n1", "fields": {"title": "x"}, "extra": 1}, 422, "invalid_request", "extra"),
        ({"item_id": "n1", "fields": {"image": "/etc/passwd"}}, 422, "unknown_field", "image"),
    ],
)
def test_bad_requests_are_refused_with_the_reason_and_nothing_is_stored(
    runs: dict[str, Path], tmp_path: Path, body: dict[str, Any], status: int, code: str, says: str
) -> None:
    with _server(runs["coldstart"], tmp_path) as srv:
        r = srv.client.post("/items", json=body, headers=W)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code and says in r.json()["error"]["message"]
        assert srv.client.get("/items/n1").status_code == 404
    assert _stored_rows(tmp_path) == 0


def test_another_worker_process_applies_what_one_stored(runs: dict[str, Path], tmp_path: Path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none")
    other = create_app(runs["coldstart"], cfg).state.srv  # a second worker on the same state dir
    with LiveServer(create_app(runs["coldstart"], cfg)) as srv:
        assert srv.client.post("/items", json=RED, headers=W).status_code == 201
        assert srv.client.delete("/items/i2", headers=W).status_code == 200
    eng = other.engines["a"]
    assert "n-red" not in eng.item_pos and "i2" in eng.item_pos
    asyncio.run(other.live.follow(other.engines))
    assert "n-red" in eng.item_pos and "i2" not in eng.item_pos
    fresh = create_app(runs["coldstart"], cfg).state.srv  # a restart replays the same rows
    fe = fresh.engines["a"]
    np.testing.assert_allclose(eng.V[eng.item_pos["n-red"]], fe.V[fe.item_pos["n-red"]], rtol=1e-6)
    for st in (other, fresh):
        st.live.close()
        st.store.close()


def test_served_scores_are_the_cold_start_models_blend_with_live_items_placed_as_offline(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    with _server(runs["coldstart"], tmp_path) as srv:
        for body in (RED, BLUE):
            assert srv.client.post("/items", json=body, headers=W).status_code == 201
        eng = srv.app.state.srv.engines["a"]
        model = load_run(runs["coldstart"]).model  # what `modalrec add-items` does offline
        assert eng._blend is not None and model.blend_weight == 0.5
        x = build_encoder({"encoder": "char-ngrams", "dim": 256}).encode(
            [RED["fields"]["title"], BLUE["fields"]["title"]]
        )
        placed = model.place_items({"text": x})
        np.testing.assert_allclose(eng.V[eng.n_base :], placed, rtol=1e-5, atol=1e-6)
        model.add_items(placed)
        users = np.arange(9)
        served = np.stack([eng._blend_scores(int(u)) for u in users])
        np.testing.assert_allclose(served, model.score(users), rtol=1e-4, atol=1e-5)
        # the HTTP answer is the model's own top 10 (training items left out)
        top, _ = model.recommend(np.array([0]), 10, exclude=eng.seen)
        expected = [eng.item_id_of(int(i)) for i in top[0]]
        assert _ids(srv.client.get("/recommend/u0", params={"k": 10}).json()) == expected
