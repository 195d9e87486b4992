"""`nhl serve`'s JSON API against `nhl search` and a numpy brute force, and its bad-input answers.

References: the database and query codes come from `nhl encode` (the CLI, not the service);
distances are recomputed here with a dot product; the top-k must match `nhl search --json`.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import nhl.cli
from nhl.codes import load_codes


@pytest.fixture(scope="module")
def setup(tmp_path_factory, served_model, digits_manifest_dir):
    from nhl.service.app import create_app
    from nhl.service.engine import Engine, Source

    root = tmp_path_factory.mktemp("api")
    for split in ("database", "query"):
        assert (
            nhl.cli.main(
                [
                    "encode",
                    str(digits_manifest_dir),
                    "--model",
                    str(served_model),
                    "--split",
                    split,
                    "--out",
                    str(root / f"{split}.npz"),
                ]
            )
            == 0
        )
    engine = Engine(Source(spec=str(served_model), manifest=digits_manifest_dir, cache_dir=root / "cache"))
    with TestClient(create_app(engine, max_pixels=10_000)) as client:
        yield {
            "client": client,
            "engine": engine,
            "root": root,
            "db": load_codes(root / "database.npz"),
            "query": load_codes(root / "query.npz"),
            "model": served_model,
        }


def hamming(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    return (q.shape[1] - q.astype(np.int64) @ d.astype(np.int64).T) // 2


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_health_names_the_model_its_lengths_and_the_database(setup):
    health = setup["client"].get("/health").json()
    assert health["lengths"] == [8, 16, 32] and health["database_size"] == len(setup["db"])
    assert health["model"] == "csq-nhl-full" and health["query_items"] == len(setup["query"])
    assert health["sha256"] == setup["db"].model["sha256"]


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_item_search_matches_nhl_search_and_brute_force(setup, bits, capsys):
    db, query = setup["db"], setup["query"]
    k = 15
    for row in (0, 7, len(query) - 1):
        item = int(query.ids[row])
        got = setup["client"].get("/search", params={"item": item, "bits": bits, "k": k}).json()
        ref = hamming(query.codes(bits)[row : row + 1], db.codes(bits))[0]
        ids = [r["id"] for r in got["results"]]
        dists = [r["distance"] for r in got["results"]]
        pos = {int(i): p for p, i in enumerate(db.ids)}
        assert dists == sorted(ref)[:k]  # the k smallest distances
        assert all(ref[pos[i]] == d for i, d in zip(ids, dists, strict=True))  # each distance is true
        assert len(set(ids)) == k
        rel = db.labels[[pos[i] for i in ids]] @ query.labels[row]
        assert [r["relevant"] for r in got["results"]] == [bool(x > 0) for x in rel]
        # the same answer as the command line's brute force (query codes file, flat index)
        one = setup["root"] / "one.npz"
        from nhl.codes import Codes, save_codes

        save_codes(one, Codes(query.packed[row : row + 1], [item], query.bits, query.model))
        capsys.readouterr()
        assert (
            nhl.cli.main(
                [
                    "search",
                    str(setup["root"] / "database.npz"),
                    "--query-codes",
                    str(one),
                    "--bits",
                    str(bits),
                    "-k",
                    str(k),
                    "--json",
                ]
            )
            == 0
        )
        cli = json.loads(capsys.readouterr().out)["queries"][0]["results"]
        assert [(r["id"], r["distance"]) for r in cli] == list(zip(ids, dists, strict=True))


def test_upload_gives_the_same_answer_as_the_item(setup, digits_splits):
    frame = digits_splits.frame
    query = setup["query"]
    item = int(query.ids[3])
    row = int(frame.loc[frame["item_id"] == item, "row"].iloc[0])
    by_item = setup["client"].get("/search", params={"item": item, "bits": 16, "k": 10}).json()
    up = (
        setup["client"]
        .post(
            "/search",
            files={"file": ("q.png", png(digits_splits.images[row]), "image/png")},
            data={"bits": "16", "k": "10"},
        )
        .json()
    )
    assert [(r["id"], r["distance"]) for r in up["results"]] == [(r["id"], r["distance"]) for r in by_item["results"]]
    assert "relevant" not in up["results"][0] and up["query"] == {"upload": "q.png"}


def test_thumbnails_are_the_items_pixels(setup, digits_splits):
    frame = digits_splits.frame
    item = int(setup["db"].ids[5])
    row = int(frame.loc[frame["item_id"] == item, "row"].iloc[0])
    got = setup["client"].get(f"/thumb/{item}")
    assert got.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(got.content))), digits_splits.images[row])


def _bomb() -> bytes:
    """A PNG whose header declares 20,000 x 20,000 pixels but whose data is a few hundred bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "request_kwargs, status, field",
    [
        (
            {"method": "POST", "files": {"file": ("a.txt", b"hello, not an image", "text/plain")}, "data": {"k": "5"}},
            400,
            "file",
        ),
        ({"method": "POST", "files": {"file": ("e.png", b"", "image/png")}, "data": {"k": "5"}}, 400, "file"),
        ({"method": "POST", "files": {"file": ("big.png", None, "image/png")}, "data": {"k": "5"}}, 413, "file"),
        ({"method": "POST", "data": {"k": "5"}}, 422, "file"),
        ({"method": "GET", "params": {"item": "ITEM", "bits": 12}}, 400, "bits"),
        ({"method": "GET", "params": {"item": "ITEM", "k": 0}}, 400, "k"),
        ({"method": "GET", "params": {"item": "ITEM", "k": 10**6}}, 400, "k"),
        ({"method": "GET", "params": {"item": 99_999_999}}, 404, "item"),
        ({"method": "GET", "params": {"bits": 8}}, 422, "item"),
        ({"method": "GET", "params": {"item": "abc"}}, 422, "item"),
    ],
)
def test_bad_input_is_a_one_line_4xx_and_the_server_keeps_serving(setup, request_kwargs, status, field):
    kwargs = dict(request_kwargs)
    method = kwargs.pop("method")
    if "params" in kwargs and kwargs["params"].get("item") == "ITEM":
        kwargs["params"] = {**kwargs["params"], "item": int(setup["query"].ids[0])}
    if "files" in kwargs and kwargs["files"]["file"][1] is None:
        kwargs["files"] = {"file": ("big.png", _bomb(), "image/png")}
    got = setup["client"].request(method, "/search", **kwargs)
    assert got.status_code == status, got.text
    body = got.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and body["error"].startswith(f"{field}:"), body
    ok = setup["client"].get("/search", params={"item": int(setup["query"].ids[0]), "k": 3})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(setup):
    big = np.zeros((120, 120), dtype=np.uint8)  # 14,400 pixels > this app's limit of 10,000
    got = setup["client"].post("/search", files={"file": ("b.png", png(big), "image/png")})
    assert got.status_code == 413 and "120 x 120" in got.json()["error"]


def test_metrics_count_requests_and_time_searches(setup):
    client = setup["client"]
    before = client.get("/metrics").text
    client.get("/search", params={"item": int(setup["query"].ids[0]), "bits": 8, "k": 3})
    text = client.get("/metrics").text

    def value(text: str, prefix: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    key = 'nhl_serve_requests_total{method="GET",route="/search",status="200"}'
    assert value(text, key) == value(before, key) + 1
    assert value(text, 'nhl_serve_search_seconds_count{bits="8"}') >= 1
    assert "# TYPE nhl_serve_request_seconds histogram" in text


def test_codes_are_cached_by_model_and_manifest(setup, digits_manifest_dir):
    from nhl.service.engine import Source, build_snapshot

    cached = sorted(p.name for p in (setup["root"] / "cache").iterdir())
    assert len(cached) == 2 and all(name.startswith("csq-nhl-full-") for name in cached)
    snap = build_snapshot(
        Source(spec=str(setup["model"]), manifest=digits_manifest_dir, cache_dir=setup["root"] / "cache")
    )
    np.testing.assert_array_equal(snap.database.codes.packed, setup["db"].packed)
    assert sorted(p.name for p in (setup["root"] / "cache").iterdir()) == cached


def test_an_unknown_model_file_is_an_error_at_start_up(digits_manifest_dir, capsys):
    assert (
        nhl.cli.main(["serve", "--model", "no-such-model.pt", "--manifest", str(digits_manifest_dir), "--poll", "0"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == "nhl serve: error: model file no-such-model.pt does not exist"


def test_a_codes_file_database_answers_like_the_encoded_one(setup, digits_manifest_dir):
    from nhl.service.app import create_app
    from nhl.service.engine import Engine, Source

    engine = Engine(
        Source(
            spec=str(setup["model"]),
            manifest=digits_manifest_dir,
            codes=setup["root"] / "database.npz",
            cache_dir=setup["root"] / "cache",
        )
    )
    item = int(setup["query"].ids[4])
    with TestClient(create_app(engine)) as client:
        got = client.get("/search", params={"item": item, "bits": 16, "k": 8}).json()
        assert client.get("/health").json()["database_size"] == len(setup["db"])
        assert client.get(f"/thumb/{int(setup['db'].ids[0])}").status_code == 404  # a codes file has no images
    ref = setup["client"].get("/search", params={"item": item, "bits": 16, "k": 8}).json()
    assert got["results"] == ref["results"]
