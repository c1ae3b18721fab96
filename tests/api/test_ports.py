"""The port pool over HTTP."""

from __future__ import annotations

import pytest


async def test_add_list_get_use_release_delete(api):
    status, body = await api.post("/network/ports", json={"ip": "127.0.0.1", "port": 25565})
    assert status == 201, body
    assert body == {"ip": "127.0.0.1", "port": 25565, "protocol": "tcp", "in_use": False, "container": None}
    status, body = await api.post("/network/ports", json={"ip": "127.0.0.1", "port": 25565, "protocol": "udp"})
    assert status == 201
    status, body = await api.post("/network/ports", json={"ip": "::1", "port": 25566, "protocol": "tcp"})
    assert status == 201 and body["ip"] == "::1"

    status, body = await api.get("/network/ports")
    assert status == 200 and body["count"] == 3
    status, body = await api.get("/network/ports", params={"protocol": "udp"})
    assert [p["protocol"] for p in body["ports"]] == ["udp"]
    status, body = await api.get("/network/ports", params={"ip": "::1"})
    assert [p["port"] for p in body["ports"]] == [25566]

    # both protocols exist for this ip/port: the protocol must be named
    status, body = await api.get("/network/ports/127.0.0.1/25565")
    assert status == 400 and "protocol" in body["error"]
    status, body = await api.get("/network/ports/127.0.0.1/25565", params={"protocol": "udp"})
    assert status == 200 and body["protocol"] == "udp"
    status, body = await api.get("/network/ports/::1/25566")
    assert status == 200

    status, body = await api.put("/network/ports/::1/25566/use")
    assert status == 200 and body["in_use"] is True
    status, body = await api.put("/network/ports/::1/25566/use")
    assert status == 409
    status, body = await api.get("/network/ports", params={"in_use": "true"})
    assert [p["port"] for p in body["ports"]] == [25566]
    status, body = await api.delete("/network/ports/::1/25566")
    assert status == 409
    status, body = await api.put("/network/ports/::1/25566/release")
    assert status == 200 and body["in_use"] is False
    status, body = await api.delete("/network/ports/::1/25566")
    assert status == 200
    status, body = await api.get("/network/ports/::1/25566")
    assert status == 404


async def test_random_available(api):
    status, body = await api.get("/network/ports/random")
    assert status == 404 and "error" in body
    for port in (30000, 30001):
        await api.post("/network/ports", json={"ip": "127.0.0.1", "port": port})
    await api.put("/network/ports/127.0.0.1/30000/use")
    for _ in range(5):
        status, body = await api.get("/network/ports/random")
        assert status == 200 and body["port"] == 30001
    status, body = await api.get("/network/ports/random", params={"protocol": "udp"})
    assert status == 404


async def test_bulk_delete_reports_each(api):
    for port in (31000, 31001, 31002):
        await api.post("/network/ports", json={"ip": "127.0.0.1", "port": port})
    await api.put("/network/ports/127.0.0.1/31002/use")
    status, body = await api.post(
        "/network/ports/bulk-delete",
        json={"ports": [{"ip": "127.0.0.1", "port": p} for p in (31000, 31001, 31002, 31003)]},
    )
    assert status == 200
    assert [p["port"] for p in body["deleted"]] == [31000, 31001]
    assert [p["port"] for p in body["in_use"]] == [31002]
    assert [p["port"] for p in body["not_found"]] == [31003]


async def test_duplicate_add_is_409(api):
    assert (await api.post("/network/ports", json={"ip": "127.0.0.1", "port": 1}))[0] == 201
    status, body = await api.post("/network/ports", json={"ip": "127.0.0.1", "port": 1, "protocol": "tcp"})
    assert status == 409 and "already" in body["error"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"ip": "999.1.1.1", "port": 80}, "ip"),
        ({"ip": "localhost", "port": 80}, "ip"),
        ({"ip": "127.0.0.1", "port": 0}, "port"),
        ({"ip": "127.0.0.1", "port": 65536}, "port"),
        ({"ip": "127.0.0.1", "port": "80"}, "port"),
        ({"ip": "127.0.0.1", "port": 80, "protocol": "icmp"}, "protocol"),
        ({"port": 80}, "ip"),
        ({"ip": "127.0.0.1", "port": 80, "extra": 1}, "extra"),
    ],
)
async def test_bad_port_input_is_400_naming_the_field(api, payload, field):
    status, body = await api.post("/network/ports", json=payload)
    assert status == 400, body
    assert field in body["error"]


async def test_bad_path_params(api):
    assert (await api.get("/network/ports/not-an-ip/80"))[0] == 400
    assert (await api.get("/network/ports/127.0.0.1/99999"))[0] == 400
    assert (await api.get("/network/ports/127.0.0.1/abc"))[0] == 400
    assert (await api.get("/network/ports/127.0.0.1/%C2%B2"))[0] == 400  # "²": str.isdigit() yes, int() no
    assert (await api.get("/network/ports", params={"in_use": "maybe"}))[0] == 400


async def test_malformed_json(api):
    status, body = await api.post("/network/ports", data=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and "JSON" in body["error"]
    status, body = await api.post("/network/ports", json=[1, 2])
    assert status == 400
